"""Mapping and annotating hundreds of millions of points in chunks, in parallel, in bounded memory.

Tables come in and go out as Parquet, CSV or zarr. Each chunk (a Parquet row
group, a block of CSV bytes, a range of zarr rows) is mapped through the
transform, optionally annotated with a region id, and written as a part file
under ``<output>.partial/``; the parts are then streamed, in input order, into
the output, which appears under its name only when complete. A rerun of an
interrupted job skips the chunks already written.

Coordinates are physical, in the unit of the transform's source space
(CONVENTIONS); points a field cannot map come out as NaN with region ``-1``.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from ..graph import SpaceGraph
from ..io.atomic import atomic_path
from ..parallel import task_threads
from ..transforms.base import Transform, as_points
from ._job import Job, mark_done
from .engine import check_shippable, open_engine, run_tasks, transform_token

log = logging.getLogger(__name__)

_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".zarr": "zarr"}
#: Region id of points that fall outside the annotation (or could not be mapped): CONVENTIONS.
OUTSIDE_ID = -1


def table_format(path) -> str:
    """``"parquet"``, ``"csv"`` or ``"zarr"`` from a file name (``.csv.gz`` counts as CSV)."""
    name = Path(path).name.lower()
    for suf in (".csv.gz", ".csv.bz2", ".csv.xz"):
        if name.endswith(suf):
            return "csv"
    fmt = _FORMATS.get(Path(name).suffix)
    if fmt is None:
        raise InputError("point tables must be .parquet, .csv (.csv.gz) or .zarr", path=path, field="format")
    return fmt


# -- the work on one chunk ---------------------------------------------------------------------------------
def resolve_annotator(annotate) -> Callable | None:
    """``None``, a callable ``points -> ids``, or an object with ``region_of`` (an Atlas)."""
    if annotate is None:
        return None
    fn = getattr(annotate, "region_of", None)
    if fn is not None and callable(fn):
        return fn
    if callable(annotate):
        return annotate
    raise InputError(f"annotate must be a callable points -> region ids or an Atlas, got {type(annotate).__name__}",
                     field="annotate")


def _resolve_transform(transform, src, dst) -> Transform:
    if isinstance(transform, SpaceGraph):
        if src is None or dst is None:
            raise InputError("mapping through a SpaceGraph needs src= and dst= space names", field="src")
        return transform.transform(src, dst)
    if not isinstance(transform, Transform):
        raise InputError(f"transform must be a Transform or a SpaceGraph, got {type(transform).__name__}",
                         field="transform")
    for name, want in (("src", src), ("dst", dst)):
        have = getattr(transform, name).name
        if want is not None and str(getattr(want, "name", want)) != have:
            raise InputError(f"{name}={want!r} but the transform's {name} is {have!r}", field=name)
    return transform


def map_and_annotate(points: np.ndarray, transform: Transform, annotate: Callable | None):
    """Map ``(N, 3)`` points; with ``annotate`` also return int64 region ids (-1 where unmapped)."""
    mapped = transform.map_points(points)
    if annotate is None:
        return mapped, None
    ids = np.full(len(mapped), OUTSIDE_ID, dtype=np.int64)
    ok = np.all(np.isfinite(mapped), axis=1)
    if ok.any():
        got = np.asarray(annotate(mapped if ok.all() else np.ascontiguousarray(mapped[ok])))
        if got.shape != (int(ok.sum()),):
            raise InputError(f"annotate returned shape {got.shape} for {int(ok.sum())} points; it must return one "
                             "region id per point", field="annotate")
        ids[ok] = got
    return mapped, ids


def _array_chunk(points, transform, annotate, i):
    task_threads()  # parallelism comes from dask's workers
    pts = np.asarray(points, dtype=np.float64)
    mapped, ids = map_and_annotate(pts, transform, annotate)
    return i, mapped, ids


def map_points(points, transform, *, src=None, dst=None, annotate=None, chunk_size: int = 1_000_000,
               scheduler=None, num_workers: int | None = None, progress: bool | None = None):
    """Map an ``(N, 3)`` array (numpy, dask or zarr) in parallel chunks; returns numpy results.

    Parameters
    ----------
    points : (N, 3) array in ``transform.src`` (its unit)
    transform : Transform or SpaceGraph (then give ``src`` and ``dst``)
    annotate : callable ``(M, 3) -> (M,)`` ids, an Atlas (``region_of``), or None
    chunk_size : rows per task
    scheduler : see :mod:`atlasreg.distributed.engine`

    Returns
    -------
    mapped : (N, 3) float64, or ``(mapped, ids)`` when ``annotate`` is given

    Examples
    --------
    >>> from atlasreg import Affine
    >>> T = Affine.from_translation([10, 0, 0], src="a", dst="b")
    >>> map_points(np.zeros((5, 3)), T, chunk_size=2)[:, 0].tolist()
    [10.0, 10.0, 10.0, 10.0, 10.0]
    """
    import dask

    T = _resolve_transform(transform, src, dst)
    fn = resolve_annotator(annotate)
    if len(getattr(points, "shape", ())) != 2 or points.shape[1] != 3:
        as_points(np.empty((0, 3)) if getattr(points, "shape", None) is None else points)  # raises the usual error
        raise InputError(f"points must have shape (N, 3), got {points.shape}", field="points")
    n = int(points.shape[0])
    chunk_size = _check_chunk(chunk_size)
    dT = dask.delayed(T, name=f"transform-{id(T)}-{n}", traverse=False)
    dA = dask.delayed(fn, name=f"annotate-{id(fn)}-{n}", traverse=False) if fn is not None else None
    tasks = []
    if not isinstance(points, np.ndarray) and not hasattr(points, "dask"):
        import dask.array as da

        points = da.from_array(points, chunks=(chunk_size, 3))  # zarr, h5py: each task reads its own rows
    for i, a in enumerate(range(0, n, chunk_size)):
        b = min(n, a + chunk_size)
        tasks.append(dask.delayed(_array_chunk, pure=False)(points[a:b], dT, dA, i))
    mapped = np.empty((n, 3), np.float64)
    ids = np.empty(n, np.int64) if fn is not None else None

    def put(res):
        i, m, r = res
        a = i * chunk_size
        mapped[a:a + len(m)] = m
        if ids is not None:
            ids[a:a + len(m)] = r

    with open_engine(scheduler, num_workers) as eng:
        if not eng.shared_memory:
            check_shippable(T, "transform")
            check_shippable(fn, "annotate")
        run_tasks(tasks, eng, progress, "points", on_result=put)
    return mapped if ids is None else (mapped, ids)


def _check_chunk(chunk_size) -> int:
    try:
        c = int(chunk_size)
    except (TypeError, ValueError):
        c = 0
    if c < 1:
        raise InputError(f"chunk_size must be a positive number of rows, got {chunk_size!r}", field="chunk_size")
    return c


# -- tables in --------------------------------------------------------------------------------------------
@dataclass
class _Input:
    path: Path
    fmt: str
    meta: object  # empty pandas DataFrame with the columns and dtypes
    parts: list  # dask Delayed objects, each a pandas DataFrame
    token: str


def _read_zarr_rows(path: str, names: list, a: int, b: int):
    import pandas as pd
    import zarr

    node = zarr.open(path, mode="r")
    if isinstance(node, zarr.Array):
        pts = np.asarray(node[a:b])
        return pd.DataFrame({"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2]})
    pts = np.asarray(node["points"][a:b])
    cols = {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2]}
    for nm in names:
        cols[nm] = np.asarray(node[nm][a:b])
    return pd.DataFrame(cols)


def _open_input(path: Path, columns, chunk_size: int, csv_options: dict | None) -> _Input:
    import dask
    import pandas as pd
    from dask.base import tokenize

    fmt = table_format(path)
    if not path.exists():
        raise InputError("point table not found", path=path)
    stamp = tokenize(str(path.resolve()), os.path.getmtime(path), path.stat().st_size if path.is_file() else 0)
    if fmt == "parquet":
        import dask.dataframe as dd
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a broken file
            raise InputError(f"cannot read Parquet: {exc}", path=path) from None
        big = max((pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)), default=0)
        if big > 8 * chunk_size:
            log.warning("%s has row groups of up to %d rows; each is one task (rewrite it with smaller row groups "
                        "for more parallelism and less memory per task)", path, big)
        df = dd.read_parquet(str(path), split_row_groups=True)
        return _Input(path, fmt, df._meta, list(df.to_delayed()), stamp)
    if fmt == "csv":
        import dask.dataframe as dd

        opts = dict(csv_options or {})
        opts.setdefault("dtype", {})
        opts["dtype"] = {**{c: "float64" for c in columns}, **opts["dtype"]}
        # Bytes per block from the rows wanted, with the line length of the file's start.
        blocksize = None
        if str(path).endswith((".gz", ".bz2", ".xz")):
            log.warning("%s is compressed, so it cannot be split: it is read as ONE chunk, in memory. For "
                        "tables larger than memory, decompress it or convert it to Parquet", path)
        else:
            with open(path, "rb") as fh:
                head = fh.read(1 << 16)
            per_line = len(head) / max(1, head.count(b"\n"))
            blocksize = max(1 << 16, int(per_line * chunk_size))
        try:
            df = dd.read_csv(str(path), blocksize=blocksize, **opts)
        except Exception as exc:  # noqa: BLE001 - pandas/dask parser errors
            raise InputError(f"cannot read CSV: {exc}", path=path) from None
        return _Input(path, fmt, df._meta, list(df.to_delayed()), stamp)
    # zarr: an (N, 3) array, or a group with "points" (N, 3) and 1-D per-point arrays
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot open zarr: {exc}", path=path) from None
    if isinstance(node, zarr.Array):
        arr, names = node, []
    else:
        if "points" not in node:
            raise InputError("a zarr point table is an (N, 3) array or a group with a 'points' (N, 3) array",
                             path=path, field="points")
        arr = node["points"]
        names = sorted(k for k in node.array_keys() if k != "points" and node[k].shape == (arr.shape[0],))
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"zarr points must have shape (N, 3), got {arr.shape}", path=path, field="points")
    meta = {"x": pd.Series([], dtype="float64"), "y": pd.Series([], dtype="float64"),
            "z": pd.Series([], dtype="float64")}
    if not isinstance(node, zarr.Array):
        for nm in names:
            meta[nm] = pd.Series([], dtype=node[nm].dtype)
    n = int(arr.shape[0])
    parts = [dask.delayed(_read_zarr_rows, pure=True)(str(path), names, a, min(n, a + chunk_size))
             for a in range(0, n, chunk_size)]
    return _Input(path, fmt, pd.DataFrame(meta), parts, tokenize(stamp, n, chunk_size))


# -- tables out --------------------------------------------------------------------------------------------
def _part_name(i: int, fmt: str) -> str:
    # CSV parts are final text (formatted in parallel); other outputs go through uncompressed Arrow IPC
    # parts, cheap to write and to read back (memory-mapped) when the output is assembled.
    return f"part-{i:07d}." + ("csv" if fmt == "csv" else "arrow")


def _map_table_chunk(df, ctx: dict, i: int) -> int:
    """Map one chunk of a table and write it as a part file (atomically), then mark it done."""
    import pyarrow as pa

    task_threads()  # parallelism comes from dask's workers
    cols = list(ctx["columns"])
    pts = np.ascontiguousarray(df[cols].to_numpy(dtype=np.float64))
    mapped, ids = map_and_annotate(pts, ctx["transform"], ctx["annotate"])
    out = df.reset_index(drop=True)
    for j, c in enumerate(ctx["out_columns"]):
        out[c] = mapped[:, j]
    if ids is not None:
        out[ctx["region_column"]] = ids
    table = pa.Table.from_pandas(out, preserve_index=False)
    final = os.path.join(ctx["parts_dir"], _part_name(i, ctx["out_fmt"]))
    with atomic_path(final, force=True, lock=False) as tmp:
        if ctx["out_fmt"] == "csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, str(tmp), pacsv.WriteOptions(include_header=False))
        else:
            import pyarrow.ipc as ipc

            with ipc.new_file(str(tmp), table.schema) as writer:
                writer.write_table(table)
    mark_done(ctx["done_dir"], f"P-{i}")
    return len(out)


def _merge_parts(parts_dir: Path, n_parts: int, fmt: str, target: Path, header_cols: list, compression) -> int:
    """Stream the part files, in order, into the output (one part in memory at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import pyarrow.ipc as ipc

    def read_part(p):
        with pa.memory_map(str(p), "r") as src:
            return ipc.open_file(src).read_all()

    names = [parts_dir / _part_name(i, fmt) for i in range(n_parts)]
    rows = 0
    if fmt == "csv":
        import gzip
        import shutil

        opener = gzip.open if str(target).endswith(".gz") else open
        with opener(target, "wb") as fh:
            fh.write((",".join(_csv_quote(c) for c in header_cols) + "\n").encode())
            for p in names:
                with open(p, "rb") as src:
                    shutil.copyfileobj(src, fh, 16 << 20)
        return -1  # not counted (the caller knows from the tasks)
    if fmt == "parquet":
        writer = None
        schema = None
        try:
            for p in names:
                t = read_part(p)
                if writer is None:
                    schema = t.schema
                    writer = pq.ParquetWriter(str(target), schema, compression=compression or "snappy")
                elif not t.schema.equals(schema):
                    try:
                        t = t.cast(schema)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                        raise InputError(f"column types differ between chunks of the input ({exc}); give explicit "
                                         "dtypes (csv_options={'dtype': ...})", field="columns") from None
                writer.write_table(t)
                rows += t.num_rows
        finally:
            if writer is not None:
                writer.close()
        return rows
    # zarr group: "points" (N, 3) plus one 1-D array per other column
    import zarr

    counts = []
    for p in names:
        with pa.memory_map(str(p), "r") as src:
            r = ipc.open_file(src)
            counts.append(sum(r.get_batch(i).num_rows for i in range(r.num_record_batches)))
    n = int(sum(counts))
    g = zarr.open_group(str(target), mode="w", zarr_format=2)
    ch = max(1, min(1 << 20, n))
    pts = g.create_array("points", shape=(n, 3), chunks=(ch, 3), dtype="float64", fill_value=np.nan)
    others = {}
    a = 0
    for p, cnt in zip(names, counts):
        df = read_part(p).to_pandas()
        pts[a:a + cnt] = df[header_cols[:3]].to_numpy(np.float64)
        for c in df.columns:
            if c in header_cols[:3]:
                continue
            if c not in others:
                others[c] = g.create_array(c, shape=(n,), chunks=(ch,), dtype=df[c].to_numpy().dtype)
            others[c][a:a + cnt] = df[c].to_numpy()
        a += cnt
    g.attrs["atlasreg"] = {"kind": "atlasreg.points", "columns": list(header_cols[:3])}
    return n


def _csv_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(ch in name for ch in ',"\n') else name


@dataclass
class PointsResult:
    """What :func:`map_points_file` wrote: ``path``, ``rows`` (-1 when not counted), chunks ``computed`` in this
    run and ``skipped`` (finished by an earlier, interrupted run), ``seconds``."""

    path: Path
    rows: int
    computed: int
    skipped: int
    seconds: float


def map_points_file(input, output, transform, *, src=None, dst=None, columns=("x", "y", "z"),
                    out_columns=None, annotate=None, region_column: str = "region",
                    chunk_size: int = 1_000_000, scheduler=None, num_workers: int | None = None,
                    progress: bool | None = None, overwrite: bool = False, resume: bool = True,
                    csv_options: dict | None = None, compression: str | None = None) -> PointsResult:
    """Map (and annotate) a point table of any size, chunk by chunk, into another table.

    Parameters
    ----------
    input, output : paths ending in .parquet, .csv (.csv.gz) or .zarr
        Zarr tables are an ``(N, 3)`` array, or a group with ``points`` (N, 3)
        and one 1-D array per extra column (what this function writes).
    transform : Transform or SpaceGraph (then give ``src`` and ``dst``)
    columns : the three coordinate columns of the input (zarr: always x, y, z)
    out_columns : names for the mapped coordinates (default: overwrite ``columns``;
        other names keep the originals beside them). Zarr output stores them as ``points``.
    annotate : callable ``(M, 3) -> (M,)`` region ids, or an Atlas (``region_of``), or None
        Called on mapped points; unmapped (NaN) points get -1 without a call.
    region_column : name of the region id column
    chunk_size : rows per task (Parquet: one task per row group)
    scheduler : see :mod:`atlasreg.distributed.engine`; on a cluster, input and
        output must be on storage every worker sees.
    progress : bool, optional
        Progress bar on stderr (default: when stderr is a terminal).
    overwrite, resume : as :func:`atlasreg.distributed.warp_blockwise`

    Returns
    -------
    PointsResult

    Examples
    --------
    >>> res = map_points_file("cells.parquet", "cells_ccf.parquet", graph, src="sample", dst="ccf",
    ...                       annotate=atlas, scheduler="tcp://10.0.0.5:8786")      # doctest: +SKIP
    """
    import dask
    from dask.base import tokenize

    t0 = time.perf_counter()
    T = _resolve_transform(transform, src, dst)
    fn = resolve_annotator(annotate)
    chunk_size = _check_chunk(chunk_size)
    inp_path = Path(input)
    out_path = Path(output)
    out_fmt = table_format(out_path)
    columns = [str(c) for c in columns]
    if len(columns) != 3:
        raise InputError(f"columns must name three coordinate columns, got {columns}", field="columns")
    out_columns = list(columns) if out_columns is None else [str(c) for c in out_columns]
    if len(out_columns) != 3:
        raise InputError(f"out_columns must name three columns, got {out_columns}", field="out_columns")
    job0 = Job(out_path, "", "points", overwrite=overwrite, resume=resume)
    job0.check()  # before reading anything
    inp = _open_input(inp_path, columns, chunk_size, csv_options)
    if inp.fmt == "zarr":
        columns = ["x", "y", "z"]
        if out_columns == [str(c) for c in ("x", "y", "z")] or out_columns is None:
            out_columns = columns
    missing = [c for c in columns if c not in inp.meta.columns]
    if missing:
        raise InputError(f"coordinate columns {missing} are not in the table (it has {list(inp.meta.columns)}); "
                         "pass columns=(...)", path=inp_path, field="columns")
    for c in columns:
        if inp.meta[c].dtype.kind not in "fiu":
            raise InputError(f"coordinate column {c!r} is not numeric ({inp.meta[c].dtype})", path=inp_path,
                             field=c)
    header = list(inp.meta.columns) + [c for c in out_columns if c not in inp.meta.columns]
    if fn is not None:
        if region_column in header:
            raise InputError(f"the table already has a column {region_column!r}; pass region_column=",
                             path=inp_path, field="region_column")
        header.append(region_column)
    if out_fmt == "zarr":
        bad = [c for c in inp.meta.columns if c not in columns and inp.meta[c].dtype.kind not in "fiub"]
        if bad:
            raise InputError(f"zarr point tables hold numbers only; columns {bad} are not numeric: write "
                             "Parquet or CSV instead", path=out_path, field="columns")
        if out_columns != columns:
            raise InputError("zarr output stores the mapped coordinates as 'points'; leave out_columns unset",
                             field="out_columns")
    token = tokenize("points-v1", inp.token, inp.fmt, len(inp.parts), columns, out_columns, out_fmt,
                     transform_token(T), None if fn is None else tokenize(fn), region_column, chunk_size)
    with open_engine(scheduler, num_workers) as eng:
        if not eng.shared_memory:
            check_shippable(T, "transform")
            check_shippable(fn, "annotate")
        job = Job(out_path, token, "points", overwrite=overwrite, resume=resume)
        job.begin()
        try:
            parts_dir = job.work / "parts"
            parts_dir.mkdir(exist_ok=True)
            if not job.resumed:
                job.started()
            ctx = {"transform": T, "annotate": fn, "columns": columns, "out_columns": out_columns,
                   "region_column": region_column if fn is not None else None, "parts_dir": str(parts_dir),
                   "done_dir": str(job.done_dir), "out_fmt": out_fmt}
            dctx = dask.delayed(ctx, name=f"points-context-{token}", traverse=False)
            done = job.done_keys()
            tasks = []
            for i, part in enumerate(inp.parts):
                if f"P-{i}" in done:
                    continue
                tasks.append(dask.delayed(_map_table_chunk, pure=True)(part, dctx, i,
                                                                        dask_key_name=f"points-{i}-{token}"))
            computed = len(tasks)
            counts: list[int] = []
            run_tasks(tasks, eng, progress, f"points {inp_path.name}", on_result=counts.append)
            rows = _merge_parts(parts_dir, len(inp.parts), out_fmt, job.target,
                                out_columns if out_fmt == "zarr" else header, compression)
            if rows < 0 and computed == len(inp.parts):
                rows = int(sum(counts))
            path = job.publish()
        finally:
            job.release()
    secs = time.perf_counter() - t0
    log.debug("mapped %s -> %s in %.1f s (%d chunks computed, %d resumed)", inp_path, path, secs, computed,
             len(inp.parts) - computed)
    return PointsResult(path, rows, computed, len(inp.parts) - computed, secs)
