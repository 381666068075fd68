"""Multiscale pyramids of EM volumes, built blockwise with dask and anti-aliased, down to light-sheet resolution.

An EM block (H01: 4×4×33 nm voxels, far larger than memory) meets a
light-sheet volume at ~1–5 µm only after ten or so halvings. Each level is
computed from the previous one *as stored on disk*, block by block: a block
(plus a small halo) is read, low-pass filtered with a Gaussian, averaged
over 2-voxel blocks and written. Memory is a few blocks per worker thread,
whatever the volume's size.

Anti-aliasing: decimating by 2 without a low-pass folds the fine texture of
EM (membranes, vesicles) into false coarse patterns. Each halved axis is
filtered with a Gaussian of σ = 2/3 voxel (scikit-image's ``pyramid_reduce``
choice for a factor of 2) and then averaged over pairs; together they pass
the new band and attenuate what would alias (a pattern at 3/4 of the new
sampling rate keeps ~11 % of its amplitude instead of all of it).

Which axes are halved: an axis is halved while its voxels are finer than
twice the finest axis of that level, so a 4×4×40 nm stack halves in-plane
first and becomes isotropic before all axes halve together (the rule of
:func:`atlasreg.io.ome_zarr.level_factors`).

Geometry: level ``k`` with cumulative factor ``f`` has voxel size ``f * s0``
and its voxel 0 centred on the block it averages, ``origin + (f - 1) / 2 * s0``
(as OME-Zarr pyramids and BigDataViewer place it).

Formats: OME-Zarr (NGFF 0.4 multiscales, readable with
``atlasreg.read_volume(path, level=k)``) and HDF5 (one dataset per level,
``s0``, ``s1``, …, each with atlasreg's geometry attributes:
``read_volume(path, dataset="s3")``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spaces import Space, as_space
from ..volume import Volume

#: σ (in voxels of the finer level) of the Gaussian applied along an axis before halving it.
ANTIALIAS_SIGMA = 2.0 / 3.0
_UNIT_TO_NGFF = {"nm": "nanometer", "um": "micrometer", "mm": "millimeter"}


@dataclass
class PyramidLevel:
    """Shape and geometry of one level."""

    shape: tuple
    voxel_size: tuple
    origin: tuple
    factor: tuple
    path: str


@dataclass
class Pyramid:
    """A multiscale pyramid written by :func:`build_pyramid`.

    Attributes
    ----------
    path : Path
    format : {"ome-zarr", "hdf5"}
    space : Space
    levels : list of PyramidLevel
    peak_block_bytes : int — largest input block (with halo) one task held in memory
    """

    path: Path
    format: str
    space: Space
    levels: list = field(default_factory=list)
    peak_block_bytes: int = 0

    def level(self, k: int) -> Volume:
        """Level ``k`` as a lazy Volume (dask array) in the pyramid's space."""
        from ..io.volumes import read_volume

        if not 0 <= k < len(self.levels):
            raise InputError(f"level {k} does not exist; the pyramid has levels 0..{len(self.levels) - 1}",
                             path=self.path, field="level")
        if self.format == "hdf5":
            return read_volume(self.path, dataset=self.levels[k].path, space=self.space)
        return read_volume(self.path, level=k, space=self.space)

    def level_for(self, voxel_size) -> int:
        """The finest level whose voxels are all at least ``voxel_size`` (the coarsest if none is).

        ``voxel_size`` is in the pyramid's unit; e.g. the light-sheet voxel size converted to nm.
        """
        want = np.broadcast_to(np.asarray(voxel_size, float), (3,))
        for k, lv in enumerate(self.levels):
            if np.all(np.asarray(lv.voxel_size) >= want * (1 - 1e-9)):
                return k
        return len(self.levels) - 1


def pyramid_factors(shape, voxel_size, target_voxel_size=None, levels: int | None = None,
                    min_size: int = 16, max_levels: int = 16) -> list[np.ndarray]:
    """Cumulative factors per level (level 0 = ones): halve the finest axes first.

    Stops at ``levels`` levels, or once every axis reaches ``target_voxel_size``
    (same unit as ``voxel_size``), or when no axis of at least ``2 * min_size``
    voxels is left to halve.

    >>> [f.tolist() for f in pyramid_factors((30, 512, 512), (50, 4, 4), target_voxel_size=60)]
    [[1, 1, 1], [1, 2, 2], [1, 4, 4], [1, 8, 8], [1, 16, 16]]
    """
    shape = np.asarray(shape, np.int64)
    vs = np.asarray(voxel_size, float)
    target = None if target_voxel_size is None else np.broadcast_to(np.asarray(target_voxel_size, float), (3,))
    f = np.ones(3, np.int64)
    out = [f.copy()]
    while len(out) < (levels if levels is not None else max_levels):
        cvs = vs * f
        cur = shape // f
        if target is not None and np.all(cvs >= target * (1 - 1e-9)):
            break
        can = cur >= 2 * min_size
        if target is not None:
            can &= cvs < target * (1 - 1e-9)
        if not can.any():
            break
        finest = cvs[can].min()
        step = np.where(can & (cvs < 2 * finest * (1 - 1e-9)), 2, 1)
        f = f * step
        out.append(f.copy())
    return out


def _level_geometry(prev_shape, step, sigma, out_chunks):
    """Trimmed input extent, output shape and halo (voxels of the finer level) of one reduction."""
    step = np.asarray(step, np.int64)
    out_shape = np.asarray(prev_shape, np.int64) // step
    halo = np.array([int(math.ceil(4.0 * s)) if st > 1 else 0 for s, st in zip(sigma, step)])
    return out_shape * step, out_shape, halo


def _blocks(shape, chunks):
    """Chunk-aligned output blocks (tuples of slices), C order."""
    grids = [range(0, int(n), int(c)) for n, c in zip(shape, chunks)]
    for i in grids[0]:
        for j in grids[1]:
            for k in grids[2]:
                yield tuple(slice(a, min(a + c, n)) for a, c, n in zip((i, j, k), chunks, shape))


class _Source:
    """Hides a dask array from dask.delayed, which would otherwise compute all of it before each task."""

    def __init__(self, data):
        self.data = data

    def __getitem__(self, sl):
        return self.data[sl]


def _copy_block(src, dst, sl) -> int:
    block = src[sl]
    if hasattr(block, "compute"):
        block = block.compute(scheduler="sync")  # a lazily generated source: compute just this block
    dst[sl] = np.asarray(block)
    return 0


def _reduce_block(prev, dst, out_sl, extent, step, sigma, halo, out_dtype) -> int:
    """One output block: read the finer level (plus halo), Gaussian low-pass the halved axes, 2-voxel means."""
    from scipy.ndimage import gaussian_filter1d

    lo = [s.start * st for s, st in zip(out_sl, step)]
    hi = [s.stop * st for s, st in zip(out_sl, step)]
    rlo = [max(0, a - h) for a, h in zip(lo, halo)]
    rhi = [min(int(n), b + h) for b, h, n in zip(hi, halo, extent)]
    x = np.asarray(prev[tuple(slice(a, b) for a, b in zip(rlo, rhi))]).astype(np.float32, copy=False)
    for ax, (sg, st) in enumerate(zip(sigma, step)):
        if st > 1 and sg > 0:
            # 'nearest' only matters at the volume's edges: elsewhere the halo holds the real neighbours.
            x = gaussian_filter1d(x, sg, axis=ax, mode="nearest", truncate=4.0)
    x = x[tuple(slice(a - r, b - r) for a, b, r in zip(lo, hi, rlo))]
    shp = []
    for n, st in zip(x.shape, step):
        shp += [n // st, st]
    m = x.reshape(shp).mean(axis=(1, 3, 5))
    if np.dtype(out_dtype).kind in "iu":
        info = np.iinfo(out_dtype)
        m = np.clip(np.rint(m), info.min, info.max)
    dst[out_sl] = m.astype(out_dtype)
    return 0


def _run_blockwise(tasks, num_workers: int, scheduler, batch: int) -> None:
    """Run (function, args) tasks as dask tasks, ``batch`` at a time, so the graph (and memory) stays bounded."""
    import dask

    pending = []
    for fn, args in tasks:
        pending.append(dask.delayed(fn, pure=False)(*args))
        if len(pending) >= batch:
            dask.compute(*pending, scheduler=scheduler, num_workers=num_workers)
            pending = []
    if pending:
        dask.compute(*pending, scheduler=scheduler, num_workers=num_workers)


def build_pyramid(source, output: str | os.PathLike, *, voxel_size=None, space: Space | str | None = None,
                  unit: str | None = None, target_voxel_size=None, levels: int | None = None, min_size: int = 16,
                  chunks=(32, 128, 128), num_workers: int = 2, force: bool = False,
                  dataset: str | None = None, scheduler=None, batch: int = 64) -> Pyramid:
    """Write an anti-aliased multiscale pyramid of an EM volume, blockwise with bounded memory.

    Parameters
    ----------
    source : Volume or path
        The full-resolution volume. A path is opened lazily with
        :func:`atlasreg.read_volume` (OME-Zarr, HDF5, TIFF…; ``voxel_size``,
        ``space``, ``unit``, ``dataset`` are passed on). A Volume may hold a
        numpy or dask array (e.g. one generated lazily).
    output : path
        ``*.ome.zarr`` / ``*.zarr`` (OME-NGFF 0.4) or ``*.h5`` / ``*.hdf5``.
    target_voxel_size : float or 3 floats, optional
        Stop once every axis is at least this coarse (the light-sheet voxel
        size, in the volume's unit). Default: until axes reach ``min_size`` voxels.
    levels : int, optional
        Exact number of levels instead.
    chunks : 3 ints
        Chunk shape of every level; memory per worker is about
        ``8 * 4 * prod(chunks)`` bytes (a float32 block of twice the chunk per
        halved axis, plus its halo and the filter's work copy).
    num_workers : int
        dask threads.
    scheduler : optional
        dask scheduler for the block tasks (default ``"threads"``; a
        ``distributed.Client`` works for OME-Zarr output).
    batch : int
        Block tasks handed to dask at once; bounds the task graph.
    force : bool
        Replace an existing output.

    Returns
    -------
    Pyramid
        Paths and geometry of every level; ``.level(k)`` opens one lazily.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> v = Volume(np.random.default_rng(0).integers(0, 255, (8, 64, 64), dtype=np.uint8),
    ...            voxel_size=(40, 4, 4), space=Space("em", "nm"))
    >>> p = build_pyramid(v, pathlib.Path(tempfile.mkdtemp()) / "em.ome.zarr", min_size=8)
    >>> [lv.voxel_size for lv in p.levels]
    [(40.0, 4.0, 4.0), (40.0, 8.0, 8.0), (40.0, 16.0, 16.0), (40.0, 32.0, 32.0)]
    >>> p.level(1).shape
    (8, 32, 32)
    """
    from ..io.atomic import atomic_path, check_writable

    out = Path(output)
    name = out.name.lower()
    if name.endswith((".zarr", ".ome.zarr")):
        fmt = "ome-zarr"
    elif name.endswith((".h5", ".hdf5")):
        fmt = "hdf5"
    else:
        raise InputError("pyramid output must end in .ome.zarr, .zarr, .h5 or .hdf5", path=out, field="output")
    check_writable(out, force)
    if isinstance(source, Volume):
        vol = source
        if space is not None:
            vol = Volume(vol.data, vol.voxel_size, vol.origin, vol.direction, as_space(space, unit=unit or vol.unit))
    else:
        from ..io.volumes import read_volume

        vol = read_volume(source, voxel_size=voxel_size, space=space, unit=unit, dataset=dataset)
    if not np.allclose(vol.direction, np.eye(3)):
        raise InputError("build_pyramid needs an axis-aligned volume (identity direction); EM stacks are",
                         field="direction")
    ch = tuple(int(c) for c in np.broadcast_to(np.asarray(chunks), (3,)))
    if any(c < 2 for c in ch):
        raise InputError(f"chunks must be at least 2 voxels per axis, got {ch}", field="chunks")
    dtype = np.dtype(vol.dtype)
    if dtype == np.bool_ or dtype.kind not in "iuf":
        raise InputError(f"EM pyramids hold intensities; got dtype {dtype}", field="dtype")
    facs = pyramid_factors(vol.shape, vol.voxel_size, target_voxel_size, levels, min_size)
    src = _Source(vol.data)
    vs0, origin0 = np.asarray(vol.voxel_size, float), np.asarray(vol.origin, float)
    geo_levels: list[PyramidLevel] = []
    peak = 0
    sched = scheduler or "threads"
    with atomic_path(out, force) as tmp:
        store = _ZarrOut(tmp) if fmt == "ome-zarr" else _H5Out(tmp)
        try:
            prev, prev_f = None, None
            for k, f in enumerate(facs):
                if k == 0:
                    shape = tuple(int(n) for n in vol.shape)
                    c = _clip(ch, shape)
                    dst = store.create(k, shape, c, dtype)
                    _run_blockwise(((_copy_block, (src, dst, sl)) for sl in _blocks(shape, c)),
                                   num_workers, sched, batch)
                else:
                    step = f // prev_f
                    sigma = [ANTIALIAS_SIGMA * (s / 2) if s > 1 else 0.0 for s in step]
                    extent, out_shape, halo = _level_geometry(prev.shape, step, sigma, ch)
                    shape = tuple(int(n) for n in out_shape)
                    c = _clip(ch, shape)
                    dst = store.create(k, shape, c, dtype)
                    tasks = ((_reduce_block, (prev, dst, sl, extent, step, sigma, halo, dtype))
                             for sl in _blocks(shape, c))
                    _run_blockwise(tasks, num_workers, sched, batch)
                    peak = max(peak, int(np.prod([cc * s + 2 * h for cc, s, h in zip(c, step, halo)])) * 4)
                lv_vs = vs0 * f
                lv_origin = origin0 + (f - 1) / 2.0 * vs0
                store.set_geometry(k, lv_vs, lv_origin, vol.space)
                prev, prev_f = store.reader(k), f
                geo_levels.append(PyramidLevel(shape, tuple(float(v) for v in lv_vs),
                                               tuple(float(v) for v in lv_origin), tuple(int(v) for v in f),
                                               str(k) if fmt == "ome-zarr" else f"s{k}"))
            store.finish(geo_levels, vol.space)
        finally:
            store.close()
    return Pyramid(out, fmt, vol.space, geo_levels, peak)


def _clip(chunks, shape):
    return tuple(max(1, min(int(c), int(n))) for c, n in zip(chunks, shape))


class _ZarrOut:
    def __init__(self, path: Path):
        import zarr

        self.path = path
        self.group = zarr.open_group(store=str(path), mode="w", zarr_format=2)

    def create(self, k, shape, chunks, dtype):
        # Blocks are chunk-aligned: every task writes its own chunks, no lock needed.
        return self.group.create_array(str(k), shape=shape, chunks=chunks, dtype=dtype,
                                       chunk_key_encoding={"name": "v2", "separator": "/"})

    def set_geometry(self, k, vs, origin, space):
        pass  # in the multiscales metadata (finish)

    def reader(self, k):
        return self.group[str(k)]

    def finish(self, levels, space: Space):
        unit = _UNIT_TO_NGFF[space.unit]
        datasets = [{"path": lv.path, "coordinateTransformations": [
            {"type": "scale", "scale": list(lv.voxel_size)},
            {"type": "translation", "translation": list(lv.origin)}]} for lv in levels]
        ms = {"version": "0.4", "name": space.name,
              "axes": [{"name": n, "type": "space", "unit": unit} for n in ("z", "y", "x")],
              "datasets": datasets, "type": "gaussian",
              "metadata": {"description": "EM pyramid written by atlasreg.em.build_pyramid",
                           "method": f"gaussian low-pass (sigma {ANTIALIAS_SIGMA:.3f} voxel per halved axis) "
                                     "then 2-voxel block mean"}}
        self.group.attrs.update({"multiscales": [ms], "atlasreg": {"space": space.name, "unit": space.unit,
                                                                   "orientation": space.orientation,
                                                                   "status": "complete"}})

    def close(self):
        pass


class _H5Out:
    def __init__(self, path: Path):
        import threading

        import h5py

        self.path = path
        self.f = h5py.File(path, "w")
        self.lock = threading.Lock()  # h5py is not thread-safe: every read and write takes it

    def create(self, k, shape, chunks, dtype):
        d = self.f.create_dataset(f"s{k}", shape=shape, dtype=dtype, chunks=chunks, compression="gzip",
                                  compression_opts=1, shuffle=True, fletcher32=True)
        return _Locked(d, self.lock)

    def set_geometry(self, k, vs, origin, space):
        from ..io.hdf5 import FORMAT_TAG

        a = self.f[f"s{k}"].attrs
        a["atlasreg_format"] = FORMAT_TAG
        a["voxel_size"] = np.asarray(vs, float)
        a["origin"] = np.asarray(origin, float)
        a["direction"] = np.eye(3)
        a["unit"] = space.unit
        a["space"] = space.name
        if space.orientation:
            a["orientation"] = space.orientation
        a["pyramid_level"] = k

    def reader(self, k):
        return _Locked(self.f[f"s{k}"], self.lock)

    def finish(self, levels, space):
        self.f.attrs["atlasreg_pyramid"] = json.dumps(
            {"levels": [lv.path for lv in levels], "space": space.name, "unit": space.unit,
             "method": f"gaussian sigma {ANTIALIAS_SIGMA:.3f} + 2-voxel mean"})

    def close(self):
        self.f.close()


class _Locked:
    """An h5py dataset whose block reads and writes hold one lock (dask calls them from threads)."""

    def __init__(self, d, lock):
        self.d, self.lock = d, lock
        self.shape, self.dtype, self.ndim = d.shape, d.dtype, d.ndim

    def __getitem__(self, idx):
        with self.lock:
            return self.d[idx]

    def __setitem__(self, idx, value):
        value = np.asarray(value)  # computed outside the lock
        with self.lock:
            self.d[idx] = value
