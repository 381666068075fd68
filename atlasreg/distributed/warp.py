"""Blockwise warping of volumes larger than memory into a multiscale OME-Zarr.

Each output block computes its voxel centres, maps them through the pull-back
(target -> source; atlasreg picks the direction, CONVENTIONS), reads only the
box of the source those positions need (plus the one-voxel interpolation
margin), samples it with the numba kernels and writes the block. Memory is set
by the block size, not the volume size. The result equals the in-memory
:func:`atlasreg.warp` (nearest neighbour: the same voxels; linear: to float
rounding).

The pyramid is written as the warp goes: a task covers a super-block of
``2**k`` chunks per axis and writes levels ``0..k`` of it; the few coarser
levels follow from level ``k`` at the end.
"""
from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _kernels as K
from ..errors import InputError, SpaceMismatchError
from ..graph import SpaceGraph
from ..io.ome_zarr import create_multiscale, downsample_block, set_status
from ..parallel import task_threads
from ..transforms.base import Sequence, Transform, fusion_plan
from ..transforms.field import DisplacementField
from ..volume import Grid, Volume, as_grid, check_fill, fill_fits, pull_transform, resolve_interpolation
from . import _kernels as BK
from ._job import Job, mark_done
from ._source import Source
from .engine import check_shippable, open_engine, run_tasks, transform_token

log = logging.getLogger(__name__)

#: Most levels a task writes itself before the pyramid's tail is built from level k.
_IN_TASK_LEVELS = 2
#: A task plan keeps at least this many tasks (for parallelism), shrinking super-blocks if needed.
_MIN_TASKS = 8


# -- the map from output voxel indices to source continuous indices -----------------------------------
class _Fused:
    """A fused plan step of a transform other than an in-memory field, mapped through its own kernel."""

    def __init__(self, pre, step, post):
        self.pre, self.step, self.post = pre, step, post

    def map_points(self, pts):
        return self.step.map_fused(np.ascontiguousarray(pts, dtype=np.float64), self.pre, self.post)


class IndexMap:
    """Output voxel index -> continuous source index, with affines folded into field kernels.

    ``grid_affine`` (output index -> physical), the pull-back chain and the
    source's physical -> index matrix become at most one pass per field (or
    per non-affine step), all without per-voxel temporaries beyond ``(N, 3)``.
    """

    def __init__(self, pull: Transform | None, grid_affine: np.ndarray, source_to_index: np.ndarray):
        steps = [] if pull is None else (pull.steps if isinstance(pull, Sequence) else [pull])
        plan = fusion_plan(steps, pre=grid_affine, post=source_to_index)  # the core's one planner
        self.ops = [self._prepare(op) for op in plan]
        #: True when the whole map is one affine: a block's source box then follows from its corners.
        self.affine_only = len(self.ops) == 1 and self.ops[0][0] == "affine"

    def corner_bounds(self, start, shape):
        """Bounds of an affine-only map over a block from its 8 corners (grown by one voxel for rounding)."""
        m = self.ops[0][1]
        c = np.array([[start[0] + a * (shape[0] - 1), start[1] + b * (shape[1] - 1), start[2] + d * (shape[2] - 1)]
                      for a in (0, 1) for b in (0, 1) for d in (0, 1)], float)
        p = c @ m[:, :3].T + m[:, 3]
        return p.min(0) - 1.0, p.max(0) + 1.0

    @staticmethod
    def _prepare(op):
        if op[0] == "affine":
            return ("affine", np.ascontiguousarray(op[1][:3], dtype=np.float64))
        if op[0] == "fused" and isinstance(op[2], DisplacementField):
            # The core's affine-field-affine kernel, affines folded in on both sides: one pass per block.
            # (Called directly: a block's points are already in field order, nothing to gain by sorting.)
            f = op[2]
            eye = np.eye(4)
            pre = eye if op[1] is None else op[1]
            post = eye if op[3] is None else op[3]
            return ("fused", np.ascontiguousarray(pre[:3], dtype=np.float64), f.displacement,
                    np.ascontiguousarray(f.physical_to_index[:3]), np.ascontiguousarray(post[:3], np.float64),
                    f.outside == "nan")
        if op[0] == "fused":  # another transform that fuses affines: through its own map
            return ("map", _Fused(op[1], op[2], op[3]))
        return op

    def __call__(self, start, shape) -> np.ndarray:
        n = int(np.prod(shape))
        pts = np.empty((n, 3), np.float64)
        ops = self.ops
        first = 0
        if ops and ops[0][0] == "affine":
            BK.index_affine(np.asarray(start, np.int64), np.asarray(shape, np.int64), ops[0][1], pts)
            first = 1
        else:
            BK.index_affine(np.asarray(start, np.int64), np.asarray(shape, np.int64), np.eye(4)[:3].copy(), pts)
        for op in ops[first:]:
            if op[0] == "affine":
                BK.apply_affine(pts, op[1], pts)
            elif op[0] == "fused":
                out = np.empty_like(pts)
                K.affine_field_affine(pts, op[1], op[2], op[3], op[4], op[5], out)
                pts = out
            else:
                pts = np.ascontiguousarray(op[1].map_points(pts), dtype=np.float64)
        return pts


# -- one block ------------------------------------------------------------------------------------------
def _work_dtype(dtype: np.dtype, interpolation: str) -> np.dtype:
    """The dtype the kernels sample (mirrors :func:`atlasreg.volume.resample`)."""
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if interpolation == "linear" and dtype not in (np.float32, np.float64):
        # Small integers are exact in float32, so sampling them directly gives the same numbers.
        if dtype.kind in "iu" and dtype.itemsize <= 2:
            return dtype
        return np.dtype(np.float32)
    return dtype


def output_dtype(src_dtype, interpolation: str, dtype=None) -> np.dtype:
    """The output dtype :func:`atlasreg.volume.resample` would choose."""
    if dtype is not None:
        return np.dtype(dtype)
    src = np.dtype(np.uint8) if np.dtype(src_dtype) == np.bool_ else np.dtype(src_dtype)
    if interpolation == "nearest":
        return src
    return np.dtype(np.float64) if src == np.float64 else np.dtype(np.float32)


class BlockSampler:
    """Samples the source at the output voxels of any block; everything a task needs, picklable."""

    def __init__(self, source: Source, index_map: IndexMap, interpolation: str, fill: float,
                 out_dtype: np.dtype, max_read_voxels: int):
        self.source = source
        self.index_map = index_map
        self.interpolation = interpolation
        self.fill = fill
        self.out_dtype = np.dtype(out_dtype)
        self.work_dtype = _work_dtype(source.dtype, interpolation)
        if interpolation == "nearest" and not fill_fits(fill, self.work_dtype):
            self.work_dtype = self.out_dtype  # e.g. NaN fill for integer data into a float output
        self.max_read_voxels = int(max_read_voxels)
        self.full = np.asarray(source.shape, np.float64)

    def block(self, start, stop) -> np.ndarray:
        shape = tuple(int(b - a) for a, b in zip(start, stop))
        cidx = self.index_map(start, shape)
        bounds = None
        if self.index_map.affine_only:
            lo, hi = self.index_map.corner_bounds(start, shape)
            bounds = (lo, hi, int(np.prod(shape)))
        return self._sample(cidx.reshape(shape + (3,)), bounds)

    def _sample(self, cidx: np.ndarray, bounds=None) -> np.ndarray:
        shape = cidx.shape[:3]
        flat = cidx.reshape(-1, 3)
        lo, hi, count = bounds if bounds is not None else BK.finite_bounds(flat)
        full = self.source.shape
        if count:
            lo_i = [max(0, int(math.floor(lo[a]))) for a in range(3)]
            hi_i = [min(full[a] - 1, int(math.floor(hi[a])) + 1) for a in range(3)]
        if not count or any(lo_i[a] > hi_i[a] for a in range(3)):
            return np.full(shape, self.fill).astype(self.out_dtype)  # nothing of the source is seen
        box = int(np.prod([hi_i[a] - lo_i[a] + 1 for a in range(3)]))
        if box > self.max_read_voxels and max(shape) > 1:
            # Split the block until the source box it needs fits the read budget.
            ax = int(np.argmax(shape))
            h = shape[ax] // 2
            first = self._sample(np.ascontiguousarray(np.take(cidx, range(0, h), axis=ax)))
            second = self._sample(np.ascontiguousarray(np.take(cidx, range(h, shape[ax]), axis=ax)))
            return np.concatenate([first, second], axis=ax)
        region = self.source.read(lo_i, [h + 1 for h in hi_i])
        if region.dtype != self.work_dtype:
            region = region.astype(self.work_dtype)
        region = np.ascontiguousarray(region)
        nearest = self.interpolation == "nearest"
        if nearest:
            vals = np.empty(len(flat), dtype=self.work_dtype)
            fill = self.work_dtype.type(self.fill)
            round_clip, vmin, vmax = False, 0.0, 0.0
        else:
            round_clip = self.out_dtype.kind in "iu"
            vals = np.empty(len(flat), dtype=self.out_dtype if round_clip else np.float64)
            fill = float(self.fill)
            info = np.iinfo(self.out_dtype) if round_clip else None
            vmin, vmax = (float(info.min), float(info.max)) if round_clip else (0.0, 0.0)
        BK.sample_box(region, flat, np.asarray(lo_i, np.float64), self.full, nearest, fill, round_clip, vmin, vmax,
                      vals)
        return vals.reshape(shape).astype(self.out_dtype, copy=False)


# -- tasks ------------------------------------------------------------------------------------------------
@dataclass
class _WarpContext:
    """Everything a task needs (shipped once per worker); output arrays are opened once per process."""

    sampler: BlockSampler | None
    store: str
    done_dir: str
    chunks: tuple
    k: int
    method: str

    def __post_init__(self):
        self._arrays = {}

    def __getstate__(self):
        st = dict(self.__dict__)
        st["_arrays"] = {}
        return st

    def array(self, level: int):
        arr = self._arrays.get(level)
        if arr is None:
            import zarr

            arr = self._arrays[level] = zarr.open_array(f"{self.store}/{level}", mode="r+", zarr_format=2)
        return arr


_HALF = (2, 2, 2)  # the blockwise pyramid halves every axis per level (super-blocks of 2**k chunks)


def _factors(levels: int) -> list[np.ndarray]:
    return [np.full(3, 2 ** lvl, np.int64) for lvl in range(levels)]


def _auto_levels(shape, chunks, max_levels: int = 8) -> int:
    """Halve until the largest axis fits in one chunk (a viewer's overview), at most ``max_levels``."""
    levels, cur = 1, np.asarray(shape)
    while levels < max_levels and np.any(cur > np.asarray(chunks)) and np.all(cur >= 2):
        cur = cur // 2
        levels += 1
    return levels


def _slices(lo, hi):
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _warp_superblock(ctx: _WarpContext, key: str, start, stop) -> int:
    """Warp one super-block: its level-0 chunks, then its levels 1..k; marks it done last."""
    task_threads()  # this thread is one of dask's workers; no nested pool
    lvl0 = ctx.array(0)
    start = np.asarray(start)
    stop = np.asarray(stop)
    buf = None
    if ctx.k >= 1:
        lo1 = start // 2
        hi1 = stop // 2  # a level has n // 2 voxels (ome_zarr.downsample_block)
        buf = np.empty(tuple(hi1 - lo1), ctx.sampler.out_dtype)
    c = np.asarray(ctx.chunks)
    for idx in itertools.product(*(range(int(a), int(b), int(s)) for a, b, s in zip(start, stop, c))):
        b0 = np.asarray(idx)
        b1 = np.minimum(b0 + c, stop)
        vals = ctx.sampler.block(b0, b1)
        lvl0[_slices(b0, b1)] = vals
        if buf is not None:
            d = downsample_block(vals, _HALF, ctx.method)
            o = b0 // 2 - lo1
            buf[_slices(o, o + d.shape)] = d
    if buf is not None:
        lo = start // 2
        for lvl in range(1, ctx.k + 1):
            if lvl > 1:
                buf = downsample_block(buf, _HALF, ctx.method)
                lo = lo // 2
            ctx.array(lvl)[_slices(lo, lo + buf.shape)] = buf
    mark_done(ctx.done_dir, key)
    return int(np.prod(stop - start))


def _pyramid_chunk(ctx: _WarpContext, level: int, key: str, lo, hi) -> int:
    """Level ``level``'s box ``[lo, hi)`` from level ``level - 1`` (the pyramid's tail)."""
    src = ctx.array(level - 1)
    lo = np.asarray(lo)
    hi = np.asarray(hi)
    fine = np.asarray(src.shape)
    block = np.asarray(src[_slices(2 * lo, np.minimum(2 * hi, fine))])
    ctx.array(level)[_slices(lo, hi)] = downsample_block(block, _HALF, ctx.method)
    mark_done(ctx.done_dir, key)
    return int(np.prod(hi - lo))


def _boxes(shape, step):
    for idx in itertools.product(*(range(0, s, st) for s, st in zip(shape, step))):
        lo = np.asarray(idx)
        yield lo, np.minimum(lo + np.asarray(step), shape)


def _key(prefix, lo) -> str:
    return prefix + "-" + "_".join(str(int(v)) for v in lo)


# -- public ---------------------------------------------------------------------------------------------
@dataclass
class WarpResult:
    """What :func:`warp_blockwise` wrote: ``path`` (complete OME-Zarr), ``grid``, pyramid ``levels``,
    blocks ``computed`` in this run and ``skipped`` (finished by an earlier, interrupted run)."""

    path: Path
    grid: Grid
    levels: int
    computed: int
    skipped: int
    seconds: float
    resumed: bool

    def level(self, level: int = 0) -> Volume:
        """Pyramid level ``level`` as a lazy (dask) :class:`~atlasreg.volume.Volume`."""
        from ..io.volumes import read_volume

        return read_volume(self.path, level=level)

    @property
    def volume(self) -> Volume:
        """Full resolution result as a lazy (dask) Volume."""
        return self.level(0)


def _resolve_pull(volume: Volume, transform, grid: Grid) -> Transform | None:
    if isinstance(transform, SpaceGraph):
        return transform.pull(grid.space, volume.space)
    if transform is not None and not isinstance(transform, Transform):
        raise InputError(f"transform must be a Transform, a SpaceGraph or None, got {type(transform).__name__}",
                         field="transform")
    return pull_transform(transform, volume.space, grid.space)


def _as_chunks(chunks, levels_wanted: bool) -> tuple[int, int, int]:
    c = np.broadcast_to(np.asarray(chunks), (3,))
    if not np.all(np.equal(np.mod(c, 1), 0)) or np.any(c < 2):
        raise InputError(f"chunks must be whole numbers >= 2 per axis, got {chunks!r}", field="chunks")
    c = tuple(int(v) for v in c)
    if levels_wanted and any(v % 2 for v in c):
        raise InputError(f"chunks must be even to build a pyramid (got {c}); pass levels=1 for none",
                         field="chunks")
    return c


def warp_blockwise(volume: Volume, transform, reference, output, *, interpolation: str = "linear",
                   fill: float = 0.0, dtype=None, chunks=128, levels: int | None = None,
                   scheduler=None, num_workers: int | None = None, progress: bool | None = None,
                   overwrite: bool = False, resume: bool = True,
                   max_read_voxels: int = 32_000_000) -> WarpResult:
    """Warp ``volume`` into ``reference``'s grid block by block, writing a multiscale OME-Zarr.

    Parameters
    ----------
    volume : Volume
        The moving image; its data may be numpy, dask (e.g. a lazily opened
        OME-Zarr/HDF5), a zarr array or an h5py dataset. Only the boxes each
        output block needs are read.
    transform : Transform, SpaceGraph or None
        Between ``volume.space`` and the reference's space, either direction
        (CONVENTIONS: atlasreg picks the pull-back). A SpaceGraph supplies the
        chain itself.
    reference : Volume or Grid
        The output grid.
    output : path ending in ``.zarr`` (``.ome.zarr``)
        Written under ``<output>.partial/`` and moved into place when complete,
        with ``attrs["atlasreg"]["status"] == "complete"``.
    interpolation, fill, dtype
        As :func:`atlasreg.warp` (same output dtype rule); also ``"auto"``: nearest for label volumes
        (bool, 32/64-bit integers), linear otherwise.
    chunks : int or 3 ints
        Output chunk shape (even, for the pyramid); memory per worker thread is
        a few times a chunk (plus the source box it needs, at most
        ``max_read_voxels`` voxels: blocks split until their box fits).
    levels : int, optional
        Pyramid levels (default: halve until one chunk covers the volume).
        Means of 2x2x2 voxels for ``linear``, every second voxel for ``nearest``
        (labels stay labels).
    scheduler : None, "threads", "sync", "processes", "tcp://HOST:PORT" or distributed.Client
        See :mod:`atlasreg.distributed.engine`. On a cluster the output folder
        must be on storage every worker sees.
    progress : bool, optional
        Progress bar on stderr (default: when stderr is a terminal).
    overwrite, resume
        Replace an existing output; continue an interrupted run of the same job
        (same inputs and parameters) instead of starting again.

    Returns
    -------
    WarpResult
        ``.volume`` opens the result lazily.

    Examples
    --------
    >>> import atlasreg as ar                                                   # doctest: +SKIP
    >>> brain = ar.read_volume("brain_2um.ome.zarr")          # lazy: nothing read yet   # doctest: +SKIP
    >>> T = ar.load_transform("sample_to_ccf.json")                             # doctest: +SKIP
    >>> atlas_grid = ar.Grid((528, 320, 456), (10, 10, 10), ar.Space("ccf"))    # doctest: +SKIP
    >>> res = warp_blockwise(brain, T, atlas_grid, "brain_ccf.ome.zarr",
    ...                      scheduler="tcp://10.0.0.5:8786")                   # doctest: +SKIP
    >>> res.volume.shape                                                       # doctest: +SKIP
    (528, 320, 456)
    """
    t0 = time.perf_counter()
    if not isinstance(volume, Volume):
        raise InputError(f"volume must be an atlasreg Volume, got {type(volume).__name__}", field="volume")
    interpolation = resolve_interpolation(volume.dtype, interpolation)
    if interpolation not in ("linear", "nearest"):
        raise InputError("interpolation must be 'auto', 'linear' or 'nearest'", field="interpolation")
    grid = as_grid(reference)
    output = Path(output)
    if not output.name.endswith(".zarr"):
        raise InputError("blockwise output is written as OME-Zarr: give a path ending in .ome.zarr (or .zarr)",
                         path=output, field="output")
    if not np.allclose(np.asarray(grid.direction, float), np.eye(3), atol=1e-9):
        raise InputError("OME-Zarr (NGFF 0.4) cannot record a rotated grid: give a reference grid whose "
                         "direction is the identity", field="reference")
    pull = _resolve_pull(volume, transform, grid)
    out_dtype = output_dtype(volume.dtype, interpolation, dtype)
    check_fill(fill, out_dtype)  # the in-memory warp's rule: a fill the output cannot hold is refused
    chunks = _as_chunks(chunks, levels is None or levels > 1)
    shape = tuple(int(s) for s in grid.shape)
    if levels is None:
        levels = _auto_levels(shape, chunks)
    if int(levels) < 1:
        raise InputError("levels must be >= 1", field="levels")
    levels = int(levels)
    method = "nearest" if interpolation == "nearest" else "mean"

    # Super-blocks of 2**k chunks per axis, as large as keeps enough tasks for parallelism.
    k = 0
    for cand in range(min(levels - 1, _IN_TASK_LEVELS), 0, -1):
        step = [c * 2 ** cand for c in chunks]
        if np.prod([math.ceil(s / st) for s, st in zip(shape, step)]) >= _MIN_TASKS:
            k = cand
            break
    sb = [c * 2 ** k for c in chunks]

    source = Source(volume.data)
    index_map = IndexMap(pull, grid.affine, np.linalg.inv(volume.affine))
    sampler = BlockSampler(source, index_map, interpolation, fill, out_dtype, max_read_voxels)

    from dask.base import tokenize

    token = tokenize("warp-v1", source.token(), transform_token(pull), shape, grid.affine, interpolation,
                     float(fill), str(out_dtype), chunks, levels, k, volume.affine)
    job = Job(output, token, "warp", overwrite=overwrite, resume=resume)
    job.check()
    import dask

    with open_engine(scheduler, num_workers) as eng:
        if not eng.shared_memory:
            check_shippable(pull, "transform")
        job.begin()
        try:
            store = job.target
            if not job.resumed:
                create_multiscale(store, shape, chunks, out_dtype, _factors(levels),
                                  {"voxel_size": grid.spacing, "origin": grid.origin, "unit": grid.space.unit,
                                   "space": grid.space.name, "orientation": grid.space.orientation}, method,
                                  fill=fill, name=output.name, status="incomplete",
                                  extra={"interpolation": interpolation, "source_space": volume.space.name,
                                         "voxel_size": [float(v) for v in grid.spacing],
                                         "origin": [float(v) for v in grid.origin],
                                         "direction": np.eye(3).tolist()})
                job.started()
            done = job.done_keys()
            ctx = _WarpContext(sampler, str(store), str(job.done_dir), chunks, k, method)
            dctx = dask.delayed(ctx, name=f"warp-context-{token}", traverse=False)
            # The pyramid's tail needs no sampler (nor the source and transform it carries).
            tctx = dask.delayed(_WarpContext(None, str(store), str(job.done_dir), chunks, k, method),
                                name=f"pyramid-context-{token}", traverse=False)
            tasks, skipped = [], 0
            for lo, hi in _boxes(shape, sb):
                key = _key("L0", lo)
                if key in done:
                    skipped += 1
                    continue
                tasks.append(dask.delayed(_warp_superblock, pure=True)(dctx, key, tuple(lo), tuple(hi),
                                                                       dask_key_name=f"warp-{key}-{token}"))
            computed = len(tasks)
            run_tasks(tasks, eng, progress, f"warp {output.name}")
            for lvl in range(k + 1, levels):
                lshape = tuple(int(s) // 2 ** lvl for s in shape)
                tail = []
                for lo, hi in _boxes(lshape, chunks):
                    key = _key(f"L{lvl}", lo)
                    if key in done:
                        skipped += 1
                        continue
                    tail.append(dask.delayed(_pyramid_chunk, pure=True)(tctx, lvl, key, tuple(lo), tuple(hi),
                                                                        dask_key_name=f"pyr-{key}-{token}"))
                computed += len(tail)
                run_tasks(tail, eng, progress, f"level {lvl}")
            set_status(store, "complete")
            path = job.publish()
        finally:
            job.release()
    secs = time.perf_counter() - t0
    log.debug("warped %s voxels into %s in %.1f s (%d blocks computed, %d resumed)", np.prod(shape), path,
             secs, computed, skipped)
    return WarpResult(path, grid, levels, computed, skipped, secs, job.resumed)
