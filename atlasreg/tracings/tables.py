"""Point tables (synapses, cells) in a declared space: CSV / Parquet I/O, pandas conversion, attaching.

A :class:`PointTable` is a pandas DataFrame whose coordinate columns (``x, y,
z`` by default) are physical coordinates of a :class:`~atlasreg.Space`. Like
SWC, CSV carries no units: the caller states space and unit (and a voxel size
for voxel coordinates), or a sidecar ``<file>.csv.json`` gives them. Parquet
keeps them in the file's schema metadata.

Examples
--------
>>> import pandas as pd
>>> t = PointTable(pd.DataFrame({"x": [8.0], "y": [16.0], "z": [0.0]}), space="em", unit="nm")
>>> t.points
array([[ 8., 16.,  0.]])
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, OutputExistsError
from ..spaces import Space, as_voxel_size, normalize_unit
from .neuron import Neuron, make_space

_META_KEY = b"atlasreg"
SIDECAR_FORMAT = "atlasreg-table-sidecar"


class PointTable:
    """A table of points (one row each) in a space; other columns ride along.

    Parameters
    ----------
    df : pandas.DataFrame
    space : Space or str
    unit : str, optional (required with a space name)
    columns : three column names holding the coordinates
    name : str
    provenance : dict, optional (JSON-serialisable)
    """

    def __init__(self, df: pd.DataFrame, space: Space | str, unit: str | None = None,
                 columns: tuple[str, str, str] = ("x", "y", "z"), name: str = "points",
                 provenance: dict | None = None, orientation: str | None = None, source=None):
        if not isinstance(df, pd.DataFrame):
            raise InputError(f"a PointTable wraps a pandas DataFrame, got {type(df).__name__}", path=source)
        self.space = make_space(space, unit, orientation, what=f"table {name!r}")
        cols = tuple(columns)
        if len(cols) != 3:
            raise InputError(f"columns must name 3 coordinate columns, got {cols!r}", path=source, field="columns")
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InputError(f"table lacks coordinate column(s) {missing} (has {list(df.columns)[:12]}); pass "
                             "columns=(...) naming the x, y, z columns", path=source, field=missing[0])
        df = df.reset_index(drop=True).copy()
        for c in cols:
            v = pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64)
            bad = ~np.isfinite(v)
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise InputError(f"row {r}: {c} = {df[c].iloc[r]!r} is not a finite number", path=source, field=c)
            df[c] = v
        self.df = df
        self.columns = cols
        self.name = str(name)
        self.provenance = dict(provenance or {})

    @property
    def points(self) -> np.ndarray:
        """``(N, 3)`` coordinates in :attr:`space`."""
        return self.df[list(self.columns)].to_numpy(np.float64)

    def __len__(self) -> int:
        return len(self.df)

    def with_points(self, points: np.ndarray, space: Space, step: str | None = None) -> "PointTable":
        df = self.df.copy()
        pts = np.asarray(points, dtype=np.float64)
        for j, c in enumerate(self.columns):
            df[c] = pts[:, j]
        prov = json.loads(json.dumps(self.provenance))
        if step is not None:
            prov.setdefault("transforms", []).append(step)
        return PointTable(df, space, columns=self.columns, name=self.name, provenance=prov)

    def to_dataframe(self) -> pd.DataFrame:
        """A copy of the table; ``attrs`` carry space, unit, orientation, name, provenance."""
        df = self.df.copy()
        df.attrs = {"space": self.space.name, "unit": self.space.unit, "orientation": self.space.orientation,
                    "name": self.name, "provenance": json.loads(json.dumps(self.provenance))}
        return df

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, space: Space | str | None = None, unit: str | None = None,
                       **kwargs) -> "PointTable":
        """Build from a DataFrame; space/unit default to ``df.attrs`` (as :meth:`to_dataframe` sets)."""
        a = getattr(df, "attrs", {}) or {}
        space = space if space is not None else a.get("space")
        if unit is None and not isinstance(space, Space):
            unit = a.get("unit")
        kwargs.setdefault("name", a.get("name", "points"))
        kwargs.setdefault("provenance", a.get("provenance"))
        if not isinstance(space, Space):
            kwargs.setdefault("orientation", a.get("orientation"))
        return cls(df, space, unit, **kwargs)

    def equals(self, other: "PointTable") -> bool:
        return (isinstance(other, PointTable) and self.space == other.space and self.columns == other.columns
                and self.name == other.name and self.provenance == other.provenance
                and self.df.equals(other.df))

    def __repr__(self) -> str:
        return f"PointTable({self.name!r}, {len(self)} rows, space={self.space})"


def _table_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def read_table(path, space: Space | str | None = None, unit: str | None = None, voxel_size=None,
               columns: tuple[str, str, str] = ("x", "y", "z"), orientation: str | None = None,
               name: str | None = None) -> PointTable:
    """Read a synapse / cell table (``.csv``, ``.tsv``, ``.parquet``) with its space.

    Parameters
    ----------
    path : str or Path
    space, unit : the table's space and unit; required for CSV unless a sidecar ``<path>.json``
        gives them (Parquet written by :func:`write_table` stores them).
    voxel_size : float or 3 floats, optional
        Coordinates are voxel indices of this size (in ``unit``); they are converted to physical.
    columns : names of the x, y, z columns.

    Examples
    --------
    >>> syn = read_table("synapses/722817260.csv", space="hemibrain", unit="nm",
    ...                  voxel_size=8)  # doctest: +SKIP
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("table file not found", path=p)
    suffix = p.suffix.lower()
    meta: dict = {}
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            tbl = pq.read_table(p, page_checksum_verification=True)  # catches flipped bits where written
            raw = (tbl.schema.metadata or {}).get(_META_KEY)
            meta = json.loads(raw) if raw else {}
            df = tbl.to_pandas()
        elif suffix in (".csv", ".tsv", ".txt"):
            df = pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")
            sc = _table_sidecar(p)
            if sc.exists():
                meta = json.loads(sc.read_text())
        else:
            raise InputError(f"unknown table format {suffix!r}; use .csv, .tsv or .parquet", path=p)
    except InputError:
        raise
    except Exception as exc:  # parser errors of pandas / pyarrow / json
        raise InputError(f"cannot read the table: {exc}", path=p) from None
    if not isinstance(meta, dict):
        raise InputError("the table's metadata (sidecar JSON or Parquet schema) must be a JSON object", path=p)
    if isinstance(space, Space):
        unit = unit if unit is not None else space.unit
        orientation = orientation if orientation is not None else space.orientation
        space = space.name
    for key, given in (("space", space), ("unit", unit), ("orientation", orientation)):
        stored = meta.get(key)
        if given is not None and stored is not None:
            same = (normalize_unit(given) == normalize_unit(stored)) if key == "unit" else \
                (str(given).lower() == str(stored).lower())
            if not same:
                raise InputError(f"{key}={given!r} was given but the file's metadata says {stored!r}", path=p,
                                 field=key)
    space = space if space is not None else meta.get("space")
    unit = unit if unit is not None else meta.get("unit")
    orientation = orientation if orientation is not None else meta.get("orientation")
    if space is None or unit is None:
        raise InputError("the table carries no space or unit: pass space= and unit= (and voxel_size= for voxel "
                         "coordinates), e.g. read_table(p, space='em', unit='nm', voxel_size=8)", path=p,
                         field="space" if space is None else "unit")
    if meta.get("columns"):
        cols = meta["columns"]
        if not (isinstance(cols, list) and len(cols) == 3 and all(isinstance(c, str) for c in cols)):
            raise InputError(f"the metadata's 'columns' must name 3 columns, got {cols!r}", path=p, field="columns")
        columns = tuple(cols)
    try:
        t = PointTable(df, space, unit, columns=columns, name=name or meta.get("name") or p.stem,
                       provenance=meta.get("provenance"), orientation=orientation, source=p)
    except InputError as exc:
        if exc.path is not None:
            raise
        raise InputError(str(exc), path=p) from None  # e.g. a bad unit in the metadata: name the file
    if voxel_size is not None:
        vs = as_voxel_size(voxel_size, path=p)
        with np.errstate(over="ignore"):
            scaled = t.points * vs[None, :]
        bad = ~np.isfinite(scaled).all(axis=1)
        if bad.any():  # finite voxel coordinates whose physical value a float64 cannot hold
            r = int(np.flatnonzero(bad)[0])
            raise InputError(f"row {r}: {t.points[r].tolist()} times voxel_size {vs.tolist()} is not a finite "
                             "physical coordinate", path=p, field="voxel_size")
        t = t.with_points(scaled, t.space)
    if not t.provenance:
        t.provenance = {"format": suffix.lstrip("."), "source_file": str(p.resolve()),
                        "source_space": t.space.name, "source_unit": t.space.unit,
                        "voxel_size": None if voxel_size is None else [float(v) for v in vs], "transforms": []}
    return t


def write_table(table: PointTable, path, force: bool = False) -> Path:
    """Write a PointTable to ``.parquet`` (space in the schema metadata) or ``.csv`` (+ sidecar JSON)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..io.atomic import atomic_path, write_atomic
    from ..io.csv_tables import write_csv_table

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise InputError(f"unknown table format {suffix!r}; use .parquet or .csv", path=p)
    targets = [p] if suffix != ".csv" else [p, _table_sidecar(p)]
    if not force:
        for q in targets:
            if q.exists():
                raise OutputExistsError(f"{q} exists; pass force=True to overwrite")
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {"space": table.space.name, "unit": table.space.unit, "orientation": table.space.orientation,
            "columns": list(table.columns), "name": table.name, "provenance": table.provenance}
    if suffix == ".csv":
        with atomic_path(p, force=force) as tmp:
            write_csv_table(table.df, tmp)
        write_atomic(_table_sidecar(p), json.dumps({"format": SIDECAR_FORMAT, "version": 1, **meta}, indent=1),
                     force=force)
    else:
        at = pa.Table.from_pandas(table.df, preserve_index=False)
        at = at.replace_schema_metadata({**(at.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()})
        with atomic_path(p, force=force) as tmp:
            pq.write_table(at, tmp, write_page_checksum=True)  # CRC per page: damage is caught on reading
    return p


def attach_synapses(neuron: Neuron, synapses: PointTable | pd.DataFrame, node_column: str = "node_id") -> Neuron:
    """Return a copy of ``neuron`` carrying ``synapses`` (each row attached to a node by ``node_column``).

    The table must be in the neuron's space (same name and unit): move one of them first.
    """
    if isinstance(synapses, PointTable):
        if synapses.space.name != neuron.space.name or synapses.space.unit != neuron.space.unit:
            from ..errors import SpaceMismatchError

            raise SpaceMismatchError(f"synapses are in {synapses.space}, neuron {neuron.name!r} in {neuron.space}; "
                                     "transform one into the other's space first")
        df = synapses.df.rename(columns=dict(zip(synapses.columns, ("x", "y", "z"))))
    else:
        df = synapses
    if node_column != "node_id":
        if node_column not in df.columns:
            raise InputError(f"synapse table has no column {node_column!r}", field=node_column)
        df = df.rename(columns={node_column: "node_id"})
    out = neuron.copy()
    out.synapses = Neuron(neuron.nodes, neuron.space, name=neuron.name, synapses=df, _validated=True).synapses
    return out


def annotate_table(df: pd.DataFrame | PointTable, atlas, space: Space | str | None = None,
                   columns: tuple[str, str, str] = ("x", "y", "z"), level: int | None = None,
                   prefix: str = "", parents=None, graph=None, nearest_within: float | None = None) -> pd.DataFrame:
    """Add atlas annotations to a cell / synapse table (coordinates in the atlas space, or in ``space``
    linked to it by ``graph``).

    Adds ``region_id`` (0 = no structure, -1 = outside the annotation volume), ``acronym``,
    ``hemisphere`` and, with ``level`` or ``parents``, ``rollup_id`` / ``rollup_acronym`` (each
    column name prefixed with ``prefix``). The table itself is not changed. ``atlasreg query`` writes
    exactly this table. ``nearest_within``: see :func:`atlasreg.tracings.analysis.annotate_points`.
    See :func:`atlasreg.tracings.analysis.annotate_points` for the lookup itself.

    Examples
    --------
    >>> cells = annotate_table(cells_in_ccf, atlas)  # doctest: +SKIP
    >>> cells.groupby("acronym").size()  # doctest: +SKIP
    """
    from .analysis import annotate_points

    if isinstance(df, PointTable):
        if space is None:
            space = df.space
        columns, frame = df.columns, df.df
    else:
        frame = df
        if space is None:
            space = (getattr(df, "attrs", {}) or {}).get("space")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"table lacks coordinate column(s) {missing}; pass columns=(...)", field=missing[0])
    pts = frame[list(columns)].to_numpy(np.float64)
    ann = annotate_points(pts, atlas, space=space, level=level, parents=parents, graph=graph,
                          nearest_within=nearest_within)
    out = frame.copy()
    for c in ann.columns:
        out[prefix + c] = ann[c].to_numpy()
    return out
