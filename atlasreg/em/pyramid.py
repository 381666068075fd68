"""Multiscale pyramids of EM volumes larger than memory, down to light-sheet resolution, as OME-Zarr.

An EM block (H01: 4×4×33 nm voxels, far larger than memory) meets a
light-sheet volume at ~1–5 µm only after ten or so halvings. The pyramid is
written by atlasreg's OME-Zarr writer (:func:`atlasreg.io.ome_zarr.write_ome_zarr`),
which works block by block with dask and computes each level from the one
written before it, read back from disk; memory stays at a few blocks per
thread whatever the volume's size. This module chooses how many levels reach
the target voxel size, opens the source lazily in small blocks, and checks
the request before any work.

Anti-aliasing: each level is the mean of 2-voxel blocks of the previous one
along the halved axes (a box filter before decimation); integer data is
rounded to the nearest value (half to even) at each level.

Anisotropy: an axis is halved while its voxels are finer than twice the
finest axis of that level (:func:`atlasreg.io.ome_zarr.level_factors`), so a
4×4×33 nm stack halves in-plane until roughly isotropic, then all axes
together. Halving stops at the first level whose voxels are at least the
target size on every axis.

Geometry (NGFF ``scale`` / ``translation`` per level): level ``k`` with
cumulative factor ``f`` has voxel size ``f * s0`` and voxel 0 centred on the
block it averages, ``origin + (f - 1) / 2 * s0`` (half the difference of the
new and old voxel sizes), so every voxel centre stays physically right.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spaces import Space, as_space, as_voxel_size, normalize_unit, unit_scale
from ..volume import Volume

#: Default chunk shape of every level (z, y, x): ~0.5 M voxels, so a reduction task holds a few MB.
DEFAULT_CHUNKS = (32, 128, 128)
#: dask block size used to read the source: small blocks keep the copy of level 0 light.
READ_BLOCK_BYTES = "1MiB"


@dataclass(frozen=True)
class PyramidLevel:
    """Shape and geometry of one level (voxel size and origin in the pyramid's unit)."""

    shape: tuple
    voxel_size: tuple
    origin: tuple
    factor: tuple
    path: str


@dataclass
class Pyramid:
    """An OME-Zarr pyramid written by :func:`build_pyramid`.

    Attributes
    ----------
    path : Path
    space : Space
    levels : list of PyramidLevel
    target_voxel_size : tuple or None
        The target in the pyramid's unit, if one was given.
    reached_target : bool
        Whether the coarsest level is at least the target on every axis.
    """

    path: Path
    space: Space
    levels: list = field(default_factory=list)
    target_voxel_size: tuple | None = None
    reached_target: bool = True

    def level(self, k: int) -> Volume:
        """Level ``k`` as a lazy Volume (dask array) in the pyramid's space."""
        from ..io.volumes import read_volume

        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not -len(self.levels) <= k < len(self.levels):
            raise InputError(f"level {k!r} does not exist; the pyramid has levels 0..{len(self.levels) - 1}",
                             path=self.path, field="level")
        return read_volume(self.path, level=int(k) % len(self.levels), space=self.space)

    def level_for(self, voxel_size, unit: str | None = None) -> int:
        """The finest level whose voxels are at least ``voxel_size`` on every axis (else the coarsest).

        ``voxel_size`` is one or three lengths in ``unit`` (default: the pyramid's unit).

        Examples
        --------
        >>> p = Pyramid(Path("em.ome.zarr"), Space("em", "nm"), [
        ...     PyramidLevel((8, 64, 64), (40.0, 4.0, 4.0), (0, 0, 0), (1, 1, 1), "0"),
        ...     PyramidLevel((8, 32, 32), (40.0, 8.0, 8.0), (0, 2, 2), (1, 2, 2), "1")])
        >>> p.level_for(0.008, unit="um")
        1
        """
        want = as_voxel_size(voxel_size) * unit_scale(unit or self.space.unit, self.space.unit)
        for k, lv in enumerate(self.levels):
            if np.all(np.asarray(lv.voxel_size) >= want * (1 - 1e-6)):
                return k
        return len(self.levels) - 1


def pyramid_factors(shape, voxel_size, target_voxel_size=None, levels: int | None = None) -> list[np.ndarray]:
    """Cumulative downsampling factors per level (level 0 = ones), finest axes halved first.

    With ``target_voxel_size`` (same unit as ``voxel_size``): up to the first
    level whose voxels are at least the target on every axis that still has
    two voxels or more (or until no axis can be halved). With ``levels``: exactly that many levels. The rule is the
    one the OME-Zarr writer uses, so these are the levels it writes.

    Examples
    --------
    >>> [f.tolist() for f in pyramid_factors((30, 512, 512), (50, 4, 4), target_voxel_size=60)]
    [[1, 1, 1], [1, 2, 2], [1, 4, 4], [1, 8, 8], [2, 16, 16]]
    """
    from ..io.ome_zarr import level_factors

    vs = as_voxel_size(voxel_size)
    if levels is not None:
        return level_factors(shape, vs, int(levels))
    every = level_factors(shape, vs, None, min_size=1, max_levels=64)
    if target_voxel_size is None:
        return level_factors(shape, vs, None)
    target = as_voxel_size(target_voxel_size, field="target_voxel_size")
    shape = np.asarray(shape, np.int64)
    for k, f in enumerate(every):
        # done when every axis reached the target or is down to one voxel (a thin stack cannot reach it in z)
        if np.all((vs * f >= target * (1 - 1e-6)) | (shape // f < 2)):
            return every[:k + 1]
    return every


def _open_source(source, voxel_size, space, unit, dataset, level) -> Volume:
    if isinstance(source, Volume):
        vol = source
        if space is not None or unit is not None:
            sp = as_space(space if space is not None else vol.space.name, unit=unit or vol.unit)
            if sp.unit != vol.unit:
                vol = vol.in_unit(sp.unit, sp)
            else:
                vol = Volume(vol.data, vol.voxel_size, vol.origin, vol.direction, sp)
        return vol
    import dask

    from ..io.precomputed import precomputed_source
    from ..io.volumes import read_volume, volume_format

    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"source must be a Volume or a path, got {type(source).__name__}", field="source")
    pre = precomputed_source(source)
    p = pre if pre is not None else Path(source).expanduser()
    if pre is None and p.exists() and volume_format(p) not in ("ome-zarr", "hdf5", "tiff", "tiff-folder"):
        raise InputError("an EM pyramid reads a chunked volume (OME-Zarr, HDF5, precomputed) or a TIFF stack; "
                         "convert this file first", path=p, field="source")
    # dask's default 128 MiB blocks would make a copy task hold 128 MiB per thread: read in small blocks.
    with dask.config.set({"array.chunk-size": READ_BLOCK_BYTES}):
        return read_volume(p, voxel_size=voxel_size, space=space, unit=unit, dataset=dataset, level=level)


def build_pyramid(source, output: str | os.PathLike, *, voxel_size=None, unit: str | None = None,
                  space: Space | str | None = None, dataset: str | None = None, level: int = 0,
                  target_voxel_size=None, target_unit: str | None = None, levels: int | None = None,
                  chunks=DEFAULT_CHUNKS, start_level: int = 0, ngff_version: str = "0.4",
                  force: bool = False) -> Pyramid:
    """Write an anti-aliased OME-Zarr pyramid of an EM volume, blockwise with bounded memory.

    Parameters
    ----------
    source : Volume or path
        The full-resolution EM volume: an OME-Zarr store, an HDF5 file
        (``dataset=``) or a TIFF stack, opened lazily; or a Volume holding a
        numpy or dask array (e.g. generated lazily).
    output : path
        ``*.ome.zarr`` / ``*.zarr`` (OME-NGFF 0.4 multiscales by default).
    voxel_size, unit, space, dataset, level
        Passed to :func:`atlasreg.read_volume` for a path (``voxel_size`` in
        ``unit``, required where the file records none); for a Volume,
        ``space``/``unit`` rename or re-express it.
    target_voxel_size : float or 3 floats, optional
        Stop at the first level whose voxels are at least this large on every
        axis (the light-sheet voxel size), in ``target_unit`` (default: the
        volume's unit).
    levels : int, optional
        Exactly this many levels instead of a target. With neither, halve
        until every axis is at most 64 voxels.
    chunks : 3 ints
        Chunk shape of every level. Memory per dask thread is a few times
        ``4 * prod(chunks) * 8`` bytes (a float32 block of the finer level).
    start_level : int
        First level to write (0: the full resolution). An H01-sized block
        (petabytes) need not be copied: ``start_level=k`` computes level ``k``
        directly from the source (the mean of each ``factor`` block, read in
        small blocks) and writes it as the output's level 0; the output's
        levels keep their true voxel sizes, origins and factors (relative to
        the source).
    ngff_version : {"0.4", "0.5"}
    force : bool
        Replace an existing output.

    Returns
    -------
    Pyramid
        Shape, voxel size, origin and factor of every level; ``.level(k)`` opens
        one lazily, ``.level_for(size)`` picks the level for a resolution.

    Raises
    ------
    InputError
        Before any work: unknown unit, non-positive target, a target finer than
        the source on every axis, a non-axis-aligned volume, a bad output name.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> v = Volume(np.random.default_rng(0).integers(0, 255, (8, 64, 64), dtype=np.uint8),
    ...            voxel_size=(40, 4, 4), space=Space("em", "nm"))
    >>> p = build_pyramid(v, pathlib.Path(tempfile.mkdtemp()) / "em.ome.zarr", target_voxel_size=0.03,
    ...                   target_unit="um")
    >>> [lv.voxel_size for lv in p.levels]
    [(40.0, 4.0, 4.0), (40.0, 8.0, 8.0), (40.0, 16.0, 16.0), (40.0, 32.0, 32.0)]
    >>> p.levels[1].origin     # voxel 0 of level 1 is centred between voxels 0 and 1 of level 0
    (0.0, 2.0, 2.0)
    """
    from ..io.atomic import check_writable
    from ..io.volumes import write_volume

    out = Path(output).expanduser()
    if not out.name.lower().endswith(".zarr"):
        raise InputError("an EM pyramid is written as OME-Zarr: give an output ending in .ome.zarr or .zarr",
                         path=out, field="output")
    src_path = None if isinstance(source, Volume) else source
    if unit is not None:
        try:
            unit = normalize_unit(unit)
        except InputError as exc:
            raise InputError(str(exc), path=src_path, field="unit") from None
    if target_unit is not None:
        try:
            target_unit = normalize_unit(target_unit)
        except InputError as exc:
            raise InputError(str(exc), path=src_path, field="target_unit") from None
    if target_voxel_size is not None and levels is not None:
        raise InputError("give target_voxel_size or levels, not both", path=src_path, field="levels")
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1):
        raise InputError(f"levels must be a positive integer, got {levels!r}", path=src_path, field="levels")
    target = None if target_voxel_size is None else as_voxel_size(target_voxel_size, path=src_path,
                                                                      field="target_voxel_size")
    check_writable(out, force)

    vol = _open_source(source, voxel_size, space, unit, dataset, level)
    where = src_path if src_path is not None else "the volume"
    if not np.allclose(vol.direction, np.eye(3), atol=1e-9):
        raise InputError("an EM pyramid needs an axis-aligned volume (identity direction); OME-NGFF cannot "
                         "store a rotation. Resample it onto an axis-aligned grid first", path=where,
                         field="direction")
    dtype = np.dtype(vol.dtype)
    if dtype.kind not in "iuf":
        raise InputError(f"EM pyramids hold intensities; got dtype {dtype}", path=where, field="dtype")
    vs0 = np.asarray(vol.voxel_size, np.float64)
    if target is not None:
        target = target * unit_scale(target_unit or vol.unit, vol.unit)
        if np.all(target <= vs0 * (1 + 1e-9)):
            raise InputError(f"target voxel size {np.round(target, 6).tolist()} {vol.unit} is not coarser than "
                             f"the source's {np.round(vs0, 6).tolist()} {vol.unit} on any axis: nothing to "
                             "downsample (check target_unit)", path=where, field="target_voxel_size")
    facs = pyramid_factors(vol.shape, vs0, target, levels)
    reached = True
    if target is not None and not np.all(vs0 * facs[-1] >= target * (1 - 1e-6)):
        reached = False
        warnings.warn(f"{where}: the volume {vol.shape} is too small to reach the target voxel size "
                      f"{np.round(target, 6).tolist()} {vol.unit}; the coarsest level has "
                      f"{np.round(vs0 * facs[-1], 6).tolist()}", stacklevel=2)
    c = tuple(int(x) for x in np.broadcast_to(np.asarray(chunks, dtype=np.int64), (3,)))
    if isinstance(start_level, bool) or not isinstance(start_level, (int, np.integer)) \
            or not 0 <= start_level < len(facs):
        raise InputError(f"start_level must be 0..{len(facs) - 1} (the pyramid has {len(facs)} levels), got "
                         f"{start_level!r}", path=where, field="start_level")
    first = vol if start_level == 0 else _coarsened(vol, facs[start_level], c)
    # the writer's halving rule applied to the coarsened volume gives exactly the remaining levels
    write_volume(first, out, force=force, chunks=c, levels=len(facs) - start_level, ngff_version=ngff_version,
                 downsample="mean")

    origin0 = np.asarray(vol.origin, np.float64)
    lvls = []
    shape = np.asarray(vol.shape, np.int64)
    for k, f in enumerate(facs[start_level:]):
        lvls.append(PyramidLevel(tuple(int(n) for n in shape // f), tuple(float(v) for v in vs0 * f),
                                 tuple(float(v) for v in origin0 + (f - 1) / 2.0 * vs0),
                                 tuple(int(v) for v in f), str(k)))
    return Pyramid(out, vol.space, lvls, None if target is None else tuple(float(v) for v in target), reached)


def _coarsened(vol: Volume, f, chunks) -> Volume:
    """The lazy block mean of ``vol`` over ``f``-voxel blocks, voxel 0 centred on the block it averages.

    The OME-Zarr writer's own downsampler with step ``f``: input blocks are ``f`` times an output block of
    about ``chunks / f`` voxels, so each task holds about one ``chunks``-sized block of the source whatever
    ``f`` is.
    """
    import dask.array as da

    from ..io.ome_zarr import downsample_dask, level_geometry

    f = np.asarray(f, np.int64)
    x = vol.data if hasattr(vol.data, "rechunk") else da.from_array(np.asarray(vol.data), chunks=chunks)
    oc = [max(1, int(c) // int(k)) for c, k in zip(chunks, f)]
    vs, origin = level_geometry(vol.voxel_size, vol.origin, f, "mean")
    return Volume(downsample_dask(x, f, "mean", oc), vs, origin, vol.direction, vol.space)


def open_pyramid(path: str | os.PathLike, space: Space | str | None = None) -> Pyramid:
    """Describe an existing OME-Zarr pyramid (any writer's) as a :class:`Pyramid`, reading only metadata.

    Examples
    --------
    >>> open_pyramid("em.ome.zarr").levels[-1].voxel_size          # doctest: +SKIP
    (2048.0, 2048.0, 2112.0)
    """
    from ..io.volumes import read_volume

    p = Path(path).expanduser()
    first = read_volume(p, level=0, space=space)
    lvls = []
    k = 0
    while True:
        try:
            v = first if k == 0 else read_volume(p, level=k, space=first.space)
        except InputError as exc:
            if "does not exist" in str(exc) and k > 0:
                break
            raise
        f = np.rint(v.voxel_size / first.voxel_size).astype(int)
        lvls.append(PyramidLevel(v.shape, tuple(float(x) for x in v.voxel_size), tuple(float(x) for x in v.origin),
                                 tuple(int(x) for x in f), str(k)))
        k += 1
    return Pyramid(p, first.space, lvls)
