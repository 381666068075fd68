"""Displacement fields larger than memory: lazy mapping, blockwise inversion and composition.

:class:`ChunkedDisplacementField` is a :class:`~atlasreg.transforms.Transform`
whose ``(X, Y, Z, 3)`` displacement stays on disk (zarr, HDF5) or in a dask
array; each call reads only the boxes of the field the points need. It mixes
with every other transform (``Sequence``, ``SpaceGraph``, :func:`warp_blockwise`,
point mapping). Its inverse is solved per point by the one inverse
solver (:mod:`atlasreg.transforms.inverse`), as the in-memory
:class:`~atlasreg.transforms.field.InverseDisplacementField` is, reading the
box that holds every solution (the points' box grown by the largest displacement).

:func:`sample_field` writes any transform as a displacement field on a grid,
block by block; :func:`invert_field` and :func:`compose_fields` are the two
uses that matter (a field's inverse as a field, a chain of transforms as one
field). As :meth:`~atlasreg.transforms.field.InverseDisplacementField.to_field`,
nodes the transform cannot compute stay NaN unless ``fill`` says otherwise.
Outputs are zarr groups published atomically like warp outputs, and
reopened with :func:`open_field`.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..parallel import serial_kernels, task_threads
from ..spaces import Space, apply_affine
from ..transforms.base import NumericalInverse, Sequence, Transform
from ..transforms.field import (DisplacementField, GridFrame, InverseDisplacementField, fill_unknown, fill_value,
                               grid_affine)
from ..transforms.inverse import MAX_ITER, InverseReport
from ..volume import Grid, as_grid
from . import _kernels as BK
from ._job import Job, mark_done
from ._source import Source
from .engine import open_engine, run_tasks, transform_token

log = logging.getLogger(__name__)

FIELD_KIND = "atlasreg.displacement_field"


class ChunkedDisplacementField(GridFrame, Transform):
    """``y = x + u(x)`` with ``u`` read box by box from a chunked ``(X, Y, Z, 3)`` array.

    Same semantics as :class:`~atlasreg.transforms.field.DisplacementField`
    (trilinear between nodes, ``outside="nan"`` or ``"zero"``); the results
    agree with it to float rounding.

    Parameters
    ----------
    displacement : zarr array, h5py dataset, dask or numpy array, shape (X, Y, Z, 3)
        Displacements in physical units of ``src``.
    spacing, origin, direction : grid geometry (CONVENTIONS)
    src, dst : Space or str
    outside : {"nan", "zero"}
    max_displacement : float, optional
        Largest |u| (computed with one chunked pass when first needed by the inverse).
    max_read_voxels : int
        Largest box of field nodes read at once; points spread wider are
        handled in groups of ``bin_voxels``-node cubes.
    allow_nan : bool
        Accept NaN nodes, meaning "displacement unknown here" (as
        :class:`~atlasreg.transforms.field.DisplacementField` ``allow_nan``): every
        point that interpolates from one maps to NaN. :func:`open_field` sets it
        for stores that record unknown nodes. Infinite values are always refused.

    Attributes
    ----------
    unknown_nodes, filled_nodes : int or None
        As recorded in the store (:func:`open_field`): nodes left NaN, and nodes
        given the ``fill`` value where the transform had none; None when the
        array was given directly.

    Examples
    --------
    >>> import zarr
    >>> z = zarr.zeros((64, 64, 64, 3), chunks=(32, 32, 32, 3), dtype="f4")     # doctest: +SKIP
    >>> F = ChunkedDisplacementField(z, spacing=(25, 25, 25), src="a", dst="b")  # doctest: +SKIP
    >>> F.map_points([[100.0, 100, 100]])                                        # doctest: +SKIP
    array([[100., 100., 100.]])
    """

    def __init__(self, displacement, spacing=(1.0, 1.0, 1.0), origin=None, direction=None, src="src",
                 dst="dst", outside: str = "nan", max_displacement: float | None = None,
                 max_read_voxels: int = 8_000_000, bin_voxels: int = 64, path=None, allow_nan: bool = False):
        super().__init__(src, dst)
        if len(getattr(displacement, "shape", ())) != 4 or displacement.shape[3] != 3:
            raise InputError(f"displacement must have shape (X, Y, Z, 3), got {getattr(displacement, 'shape', None)}",
                             path=path, field="displacement")
        if min(displacement.shape[:3]) < 1:
            raise InputError("displacement grid is empty", path=path, field="displacement")
        if np.dtype(displacement.dtype).kind != "f":
            raise InputError(f"displacement must be floating point, got {displacement.dtype}", path=path,
                             field="displacement")
        if self.src.unit != self.dst.unit:
            raise InputError(f"a displacement field maps within one unit, but src is {self.src.unit} and dst "
                             f"{self.dst.unit}", field="unit")
        if outside not in ("nan", "zero"):
            raise InputError("outside must be 'nan' or 'zero'", field="outside")
        self.source = Source(displacement)
        self.outside = outside
        self.allow_nan = bool(allow_nan)
        self.unknown_nodes: int | None = None
        self.filled_nodes: int | None = None
        self.path = None if path is None else str(path)
        self.index_to_physical = grid_affine(spacing, origin, direction)
        if abs(np.linalg.det(self.index_to_physical)) < 1e-300:
            raise InputError("displacement grid geometry is singular (zero spacing?)", field="spacing")
        self.physical_to_index = np.linalg.inv(self.index_to_physical)
        self._max_disp = None if max_displacement is None else float(max_displacement)
        self.max_read_voxels = int(max_read_voxels)
        self.bin_voxels = int(bin_voxels)

    # -- geometry ------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.source.shape[:3])


    def token(self) -> str:
        """Fingerprint for resumable jobs (the array's identity, not its bytes)."""
        from dask.base import tokenize

        return tokenize(self.source.token(), self.index_to_physical, self.outside, self.src, self.dst)

    def max_displacement(self) -> float:
        """Largest |u| over the nodes whose displacement is known (one chunked pass, then cached; 0 when
        none is)."""
        if self._max_disp is None:
            import dask.array as da

            d = self.source.data
            arr = d if hasattr(d, "dask") else da.from_array(d, chunks=(64, 64, 64, 3))
            norms = da.sqrt((arr.astype(np.float64) ** 2).sum(axis=-1))
            self._max_disp = float(da.where(da.isnan(norms), 0.0, norms).max().compute())  # |u| >= 0
        return self._max_disp

    def box_field(self, lo, hi) -> DisplacementField:
        """The nodes ``[lo, hi]`` (inclusive) as an in-memory DisplacementField in the same frame."""
        lo = [int(v) for v in lo]
        hi = [int(v) for v in hi]
        u = self.source.read(lo, [h + 1 for h in hi])
        if not np.all(np.isfinite(u)) and (not self.allow_nan or np.isinf(u).any()):
            raise InputError(f"displacement field has NaN or inf in nodes {lo}..{hi}", path=self.path,
                             field="displacement")
        org = self.index_to_physical[:3, :3] @ np.asarray(lo, float) + self.index_to_physical[:3, 3]
        return DisplacementField(u, spacing=self.spacing, origin=org, direction=self.direction, src=self.src,
                                 dst=self.dst, outside=self.outside, allow_nan=self.allow_nan)

    def to_field(self) -> DisplacementField:
        """The whole field in memory (its ``unknown_nodes`` counted, ``filled_nodes`` as recorded)."""
        F = self.box_field((0, 0, 0), [s - 1 for s in self.shape])
        F.filled_nodes = self.filled_nodes or 0
        return F

    # -- mapping ---------------------------------------------------------------------------------------
    def _boxes_for(self, pts: np.ndarray, margin: int):
        """Yield (row indices or None for all, lo, hi) covering every finite point's nodes."""
        m = self.physical_to_index
        cidx = np.ascontiguousarray(apply_affine(m, pts))
        lo, hi, count = BK.finite_bounds(cidx)
        if not count:
            return
        n = np.asarray(self.shape)
        blo = np.maximum(np.floor(lo).astype(np.int64) - margin, 0)
        bhi = np.minimum(np.floor(hi).astype(np.int64) + 1 + margin, n - 1)
        if np.any(blo > bhi):
            return  # every point lies outside the grid
        if np.prod(bhi - blo + 1) <= self.max_read_voxels:
            yield None, blo, bhi
            return
        # Points spread wide: group them by cubes of nodes, read each cube (with its margin) once.
        finite = np.all(np.isfinite(cidx), axis=1)
        rows = np.flatnonzero(finite)
        b = self.bin_voxels
        cell = np.clip(np.floor(cidx[rows] / b).astype(np.int64), -1, (n - 1) // b + 1)
        key = (cell[:, 0] + 1) * (n[1] // b + 3) * (n[2] // b + 3) + (cell[:, 1] + 1) * (n[2] // b + 3) + cell[:, 2] + 1
        order = np.argsort(key, kind="stable")
        rows, key = rows[order], key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        for s, e in zip(starts, np.r_[starts[1:], len(rows)]):
            sel = rows[s:e]
            c = cidx[sel]
            glo = np.maximum(np.floor(c.min(0)).astype(np.int64) - margin, 0)
            ghi = np.minimum(np.floor(c.max(0)).astype(np.int64) + 1 + margin, n - 1)
            if np.any(glo > ghi):
                continue
            yield sel, glo, ghi

    def _fill_unread(self, pts: np.ndarray) -> np.ndarray:
        # Points no box covers lie outside the grid (or are NaN already).
        if self.outside == "nan":
            return np.full_like(pts, np.nan)
        return pts.copy()

    def _map(self, pts: np.ndarray) -> np.ndarray:
        out = self._fill_unread(pts)
        with serial_kernels():
            for rows, lo, hi in self._boxes_for(pts, 0):
                f = self.box_field(lo, hi)
                if rows is None:
                    return f._map(pts)
                out[rows] = f._map(np.ascontiguousarray(pts[rows]))
        return out

    def _inverse(self) -> "ChunkedInverseDisplacementField":
        return ChunkedInverseDisplacementField(self)


class ChunkedInverseDisplacementField(NumericalInverse):
    """The inverse of a :class:`ChunkedDisplacementField`, solved per point by the one solver
    (:mod:`atlasreg.transforms.inverse`, damped Newton) with the same ``tol``, ``on_fail`` and
    ``last_report`` as the in-memory :class:`~atlasreg.transforms.field.InverseDisplacementField`.

    For each group of points it reads the box holding every possible solution: the points' box
    grown by the largest displacement (plus two nodes), since ``|x - y| = |u(x)|``.
    """

    def token(self) -> str:
        from dask.base import tokenize

        return tokenize("inverse", self.forward.token(), self.tol, self.max_iter, self.on_fail)

    def _map(self, pts: np.ndarray) -> np.ndarray:
        f = self.forward
        margin = int(math.ceil(f.max_displacement() / float(f.spacing.min()))) + 2
        out = f._fill_unread(pts)
        report = InverseReport.empty(self.tol)
        unread = np.ones(len(pts), bool)
        with serial_kernels():
            for rows, lo, hi in f._boxes_for(pts, margin):
                inv = InverseDisplacementField(f.box_field(lo, hi), tol=self.tol, max_iter=self.max_iter,
                                               on_fail=self.on_fail)
                sel = pts if rows is None else np.ascontiguousarray(pts[rows])
                res = inv._map(sel)
                report = report.merged(inv.last_report)
                if rows is None:
                    out = res
                    unread[:] = False
                else:
                    out[rows] = res
                    unread[rows] = False
        n_unread = int(unread.sum())
        if n_unread:  # points no box covers: off the grid, as the forward map's outside rule says
            report = report.merged(InverseReport(n_unread, 0, n_unread, 0, float("nan"), float("nan"), self.tol))
        self.last_report = report
        self.last_residual = report.max_residual
        return out


# -- fields on disk ---------------------------------------------------------------------------------------
def open_field(path, max_read_voxels: int = 8_000_000) -> ChunkedDisplacementField:
    """Open a displacement field written by :func:`sample_field` (lazily; nothing is read yet).

    Nodes the store records as unknown (NaN, written with ``fill=None``) are accepted: points that
    interpolate from one map to NaN. ``unknown_nodes`` and ``filled_nodes`` are set from the store's
    metadata (stores written before ``fill`` existed zero-filled their ``nan_nodes``).

    Examples
    --------
    >>> F = open_field("inverse.zarr")     # doctest: +SKIP
    >>> F.map_points(points)               # doctest: +SKIP
    """
    import zarr

    p = Path(path)
    try:
        g = zarr.open_group(str(p), mode="r")
        meta = dict(g.attrs["atlasreg"])
    except Exception:  # noqa: BLE001 - any failure means: not one of our fields
        raise InputError("not a displacement field written by atlasreg (no zarr group with "
                         "attrs['atlasreg'])", path=p) from None
    if meta.get("kind") != FIELD_KIND:
        raise InputError(f"zarr group holds {meta.get('kind')!r}, not a displacement field", path=p, field="kind")
    if meta.get("status") != "complete":
        raise InputError("displacement field was not completely written (status "
                         f"{meta.get('status')!r}); rerun the job that writes it", path=p, field="status")
    src = Space(meta["src"], meta["unit"])
    dst = Space(meta["dst"], meta["unit"])
    counts = {}
    for name, default in (("unknown_nodes", 0), ("filled_nodes", meta.get("nan_nodes", 0))):
        v = meta.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InputError(f"{name} must be a count of nodes, got {v!r}", path=p, field=name)
        counts[name] = v
    F = ChunkedDisplacementField(g["displacement"], meta["spacing"], meta["origin"], meta["direction"], src,
                                 dst, outside=meta.get("outside", "nan"),
                                 max_displacement=meta.get("max_displacement"),
                                 max_read_voxels=max_read_voxels, path=p, allow_nan=counts["unknown_nodes"] > 0)
    F.unknown_nodes, F.filled_nodes = counts["unknown_nodes"], counts["filled_nodes"]
    return F


def _field_task(ctx: dict, key: str, lo, hi) -> tuple[float, int]:
    import zarr

    task_threads()
    lo = np.asarray(lo)
    hi = np.asarray(hi)
    shape = tuple(int(v) for v in hi - lo)
    y = np.empty((int(np.prod(shape)), 3))
    BK.index_affine(lo.astype(np.int64), np.asarray(shape, np.int64), np.ascontiguousarray(ctx["affine"][:3]), y)
    x = ctx["transform"].map_points(y)
    u = x - y
    # where the transform gives nothing: unknown (NaN) unless a fill value was chosen; counted either way
    bad = fill_unknown(u, ctx["fill"])
    arr = zarr.open_array(ctx["array"], mode="r+", zarr_format=2)
    arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2], :] = u.reshape(shape + (3,)).astype(arr.dtype)
    known = u if ctx["fill"] is not None else u[~bad]
    mx = float(np.sqrt((known ** 2).sum(1)).max()) if len(known) else 0.0
    stats = (mx, int(bad.sum()))
    mark_done(ctx["done_dir"], key, json.dumps(stats))  # kept for a resumed run's totals
    return stats


def sample_field(transform: Transform, grid, output, *, chunks=64, dtype="float32", outside: str = "nan",
                 fill=None, scheduler=None, num_workers: int | None = None, progress: bool | None = None,
                 overwrite: bool = False, resume: bool = True) -> ChunkedDisplacementField:
    """Write ``transform`` as a displacement field on ``grid`` (nodes in ``transform.src``), block by block.

    Node ``x`` gets ``u(x) = transform(x) - x``. Nodes the transform sends
    nowhere (NaN: outside a field, an inverse that does not exist there) are
    counted in ``attrs["atlasreg"]["nan_nodes"]`` and get what ``fill`` says
    (recorded as ``fill``, with ``unknown_nodes`` / ``filled_nodes``).

    Parameters
    ----------
    transform : Transform
        ``src`` and ``dst`` in the same unit; ``grid`` is a grid of ``src``.
    grid : Grid or Volume
    output : path ending in ``.zarr``
        Written under ``<output>.partial/`` and published when complete.
    chunks : int
        Nodes per block edge (memory per thread ~ chunks**3 * 100 bytes).
    fill : None, "zero" or float
        As :meth:`~atlasreg.transforms.field.InverseDisplacementField.to_field`:
        ``None`` (default) leaves those nodes NaN (unknown), so points that
        interpolate from one map to NaN and the field cannot be saved to a
        transform file; ``"zero"`` or a number writes that displacement there
        knowingly (not the transform's value).

    Returns
    -------
    ChunkedDisplacementField
        The field just written, opened lazily.
    """
    import zarr
    from dask.base import tokenize

    t0 = time.perf_counter()
    if not isinstance(transform, Transform):
        raise InputError(f"transform must be a Transform, got {type(transform).__name__}", field="transform")
    g = as_grid(grid)
    if g.space.name != transform.src.name:
        raise InputError(f"the grid is in space {g.space.name!r} but the transform starts in "
                         f"{transform.src.name!r}; give a grid of the transform's source space", field="grid")
    if transform.src.unit != transform.dst.unit:
        raise InputError(f"a displacement field maps within one unit; {transform!r} goes from "
                         f"{transform.src.unit} to {transform.dst.unit}", field="transform")
    out = Path(output)
    if not out.name.endswith(".zarr"):
        raise InputError("a displacement field is written as zarr: give a path ending in .zarr", path=out,
                         field="output")
    c = int(chunks)
    if c < 1:
        raise InputError("chunks must be a positive integer", field="chunks")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise InputError("a displacement field's dtype must be floating point", field="dtype")
    value = fill_value(fill)
    shape = tuple(int(s) for s in g.shape)
    token = tokenize("field-v2", transform_token(transform), shape, g.affine, c, str(dtype), outside, value)
    job = Job(out, token, "field", overwrite=overwrite, resume=resume)
    job.begin()
    try:
        store = job.target
        if not job.resumed:
            grp = zarr.open_group(str(store), mode="w", zarr_format=2)
            grp.create_array("displacement", shape=shape + (3,), chunks=(c, c, c, 3), dtype=dtype, fill_value=0,
                             chunk_key_encoding={"name": "v2", "separator": "/"})
            grp.attrs["atlasreg"] = {"kind": FIELD_KIND, "status": "incomplete", "src": transform.src.name,
                                     "dst": transform.dst.name, "unit": transform.src.unit,
                                     "spacing": [float(v) for v in g.spacing],
                                     "origin": [float(v) for v in g.origin],
                                     "direction": np.asarray(g.direction, float).tolist(), "outside": outside,
                                     "fill": fill if value is None or isinstance(fill, str) else value,
                                     "made_from": repr(transform)}
            job.started()
        import dask

        ctx = {"transform": transform, "affine": g.affine, "array": str(store / "displacement"),
               "done_dir": str(job.done_dir), "fill": value}
        dctx = dask.delayed(ctx, name=f"field-context-{token}", traverse=False)
        done = job.done_keys()
        tasks = []
        stats = []
        for idx in itertools.product(*(range(0, s, c) for s in shape)):
            lo = np.asarray(idx)
            hi = np.minimum(lo + c, shape)
            key = "B-" + "_".join(str(v) for v in lo)
            if key in done:  # finished by an interrupted run: its statistics from its marker
                stats.append(tuple(json.loads(job.done_record(key))))
                continue
            tasks.append(dask.delayed(_field_task, pure=True)(dctx, key, tuple(lo), tuple(hi),
                                                               dask_key_name=f"field-{key}-{token}"))
        with open_engine(scheduler, num_workers) as eng:
            run_tasks(tasks, eng, progress, f"field {out.name}", on_result=stats.append)
        grp = zarr.open_group(str(store), mode="r+", zarr_format=2)
        meta = dict(grp.attrs["atlasreg"])
        meta["max_displacement"] = max(s[0] for s in stats)  # over the known nodes
        n_bad = sum(s[1] for s in stats)
        meta["nan_nodes"] = n_bad  # nodes the transform gave no value
        meta["unknown_nodes"] = n_bad if value is None else 0
        meta["filled_nodes"] = 0 if value is None else n_bad
        meta["status"] = "complete"
        grp.attrs["atlasreg"] = meta
        path = job.publish()
    finally:
        job.release()
    log.debug("wrote field %s (%d nodes) in %.1f s", path, int(np.prod(shape)), time.perf_counter() - t0)
    return open_field(path)


def invert_field(field, output, *, grid=None, tol: float | None = None, max_iter: int = MAX_ITER,
                 on_fail: str = "nan", fill=None, **kwargs) -> ChunkedDisplacementField:
    """The inverse of a displacement field, as a displacement field, computed block by block.

    Parameters
    ----------
    field : DisplacementField or ChunkedDisplacementField
    output : path ending in ``.zarr``
    grid : Grid, optional
        Nodes of the inverse (in ``field.dst``); default: the forward field's grid.
    tol, max_iter, on_fail : solver controls (as :class:`~atlasreg.transforms.field.InverseDisplacementField`);
        nodes whose inverse does not converge are NaN (treated as ``fill`` says), or (``on_fail="raise"``)
        the job stops
    fill : None, "zero" or float
        What nodes without an inverse (preimage off the forward grid, or a fold) get, as
        :meth:`~atlasreg.transforms.field.InverseDisplacementField.to_field`: ``None`` (default) leaves
        them NaN, so points near them map to NaN; ``"zero"`` or a number writes that displacement
        knowingly. Counted in ``attrs["atlasreg"]`` (``unknown_nodes`` / ``filled_nodes``).
    **kwargs : passed to :func:`sample_field` (chunks, scheduler, progress, overwrite, resume)

    Examples
    --------
    >>> inv = invert_field(F, "F_inverse.zarr", scheduler="tcp://10.0.0.5:8786")   # doctest: +SKIP
    """
    if isinstance(field, DisplacementField):
        inv: Transform = InverseDisplacementField(field, tol=tol, max_iter=max_iter, on_fail=on_fail)
    elif isinstance(field, ChunkedDisplacementField):
        inv = ChunkedInverseDisplacementField(field, tol=tol, max_iter=max_iter, on_fail=on_fail)
        field.max_displacement()  # once here, not once per worker
    else:
        raise InputError(f"invert_field takes a displacement field, got {type(field).__name__}", field="field")
    if grid is None:
        sp = field.dst
        grid = Grid(field.shape, tuple(field.spacing), sp, tuple(field.origin), field.direction)
    return sample_field(inv, grid, output, outside=field.outside, fill=fill, **kwargs)


def compose_fields(transforms, grid, output, **kwargs) -> ChunkedDisplacementField:
    """A chain of transforms (fields, affines, ...) as ONE displacement field on ``grid``, block by block.

    ``transforms`` is a list applied in order (or a Sequence); ``grid`` is a
    grid of the first transform's source space. See :func:`sample_field` (nodes
    the chain sends nowhere stay NaN unless ``fill=`` is given).

    Examples
    --------
    >>> one = compose_fields([F1, F2], F1_grid, "F1_then_F2.zarr")   # doctest: +SKIP
    """
    seq = transforms if isinstance(transforms, Transform) else Sequence(list(transforms))
    return sample_field(seq, grid, output, **kwargs)
