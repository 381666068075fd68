"""The light-sheet region that matches an EM block, cut out through the current EM → light-sheet transform.

The EM block's physical box (voxel corners, not only centres) is sampled on a
lattice of points over its surface and inside, mapped into the light-sheet
space (a nonlinear landmark fit bends edges, so corners alone are not
enough), and the light-sheet voxels covering the mapped points plus a margin
are cut out. The crop is a view of the light-sheet volume's array (lazy for
dask-backed volumes) with the geometry of that sub-grid.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import InputError
from ..spaces import unit_scale
from ..transforms.base import Transform
from ..volume import Grid, Volume


def _grid_of(v, name: str) -> Grid:
    if isinstance(v, Volume):
        return v.grid
    if isinstance(v, Grid):
        return v
    raise InputError(f"{name} must be a Volume or a Grid, got {type(v).__name__}", field=name)


def em_to_lm_mapper(transform, em_space, lm_space):
    """A function mapping EM points (EM volume's unit) to light-sheet points (light-sheet volume's unit).

    ``transform`` is a Transform EM → LM or LM → EM (its inverse is used) or a
    :class:`~atlasreg.SpaceGraph` that connects the two spaces. Units are
    converted where the transform's end spaces use another unit.
    """
    from ..graph import SpaceGraph

    if isinstance(transform, SpaceGraph):
        if em_space.name not in transform or lm_space.name not in transform:
            raise InputError(f"the space graph does not hold both {em_space.name!r} and {lm_space.name!r}",
                             field="transform")
        T = transform.transform(em_space.name, lm_space.name)
    elif isinstance(transform, Transform):
        if transform.src.name == em_space.name and transform.dst.name == lm_space.name:
            T = transform
        elif transform.src.name == lm_space.name and transform.dst.name == em_space.name:
            T = transform.inverse()
        else:
            raise InputError(f"the transform maps {transform.src.name!r} -> {transform.dst.name!r}, but the EM "
                             f"volume is in {em_space.name!r} and the light-sheet volume in {lm_space.name!r}: the "
                             "spaces do not chain. Name the volumes' spaces as the transform's ends",
                             field="transform")
    else:
        raise InputError(f"transform must be a Transform or a SpaceGraph, got {type(transform).__name__}",
                         field="transform")
    s_in = unit_scale(em_space.unit, T.src.unit)
    s_out = unit_scale(T.dst.unit, lm_space.unit)

    def mapper(points):
        return T.map_points(np.asarray(points, np.float64) * s_in) * s_out

    mapper.transform = T
    return mapper


def block_points(grid: Grid, n: int = 9) -> np.ndarray:
    """An ``n``×``n``×``n`` lattice of physical points spanning the grid's box, voxel corners included."""
    axes = [np.linspace(-0.5, s - 0.5, n) for s in grid.shape]
    idx = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return grid.index_to_physical(idx)


def crop_lm(em, lm: Volume, transform, margin: float = 0.0, *, samples: int = 9) -> Volume:
    """The part of the light-sheet volume ``lm`` that covers the EM block ``em``, with its true geometry.

    Parameters
    ----------
    em : Volume or Grid
        The EM block (any pyramid level: only its physical box matters).
    lm : Volume
        The light-sheet volume (numpy or lazy dask data: only the crop is read
        when the result's data is computed).
    transform : Transform or SpaceGraph
        EM → light-sheet (e.g. the landmark fit), or light-sheet → EM, or a
        graph connecting the two spaces. The spaces must be named as the
        volumes' spaces; units are converted.
    margin : float
        Extra border around the mapped box, in the light-sheet unit.
    samples : int
        Lattice points per axis used to map the block's box.

    Returns
    -------
    Volume
        In ``lm``'s space: voxel ``(0, 0, 0)`` of the crop is voxel ``lo`` of
        ``lm`` (same physical position), same spacing and direction.

    Raises
    ------
    InputError
        Spaces that do not chain, a negative margin, or an EM block that maps
        entirely outside the light-sheet volume.

    Examples
    --------
    >>> from atlasreg import Affine, Space
    >>> em = Grid((30, 512, 512), (50.0, 4.0, 4.0), Space("em", "nm"))
    >>> lm = Volume(np.zeros((100, 100, 100), np.uint16), voxel_size=1.0, space="lm")   # µm
    >>> T = Affine(np.eye(4), Space("em", "nm"), Space("lm_nm", "nm")).then(
    ...     Affine.from_units(Space("lm_nm", "nm"), Space("lm_um", "um"))).then(
    ...     Affine.from_translation([20, 30, 40], src="lm_um", dst="lm"))
    >>> c = crop_lm(em, lm, T, margin=1.0)
    >>> c.shape, c.origin.tolist()
    ((4, 5, 5), [19.0, 29.0, 39.0])
    """
    g = _grid_of(em, "em")
    if not isinstance(lm, Volume):
        raise InputError(f"lm must be a Volume, got {type(lm).__name__}", field="lm")
    if not np.isfinite(margin) or margin < 0:
        raise InputError(f"margin must be a length >= 0 in {lm.unit}, got {margin!r}", field="margin")
    mapper = em_to_lm_mapper(transform, g.space, lm.space)
    pts = mapper(block_points(g, max(2, int(samples))))
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) == 0:
        raise InputError("the transform maps no point of the EM block (all outside its domain)", field="transform")
    idx = lm.physical_to_index(pts)
    pad = margin / lm.voxel_size
    lo_f, hi_f = idx.min(0) - pad, idx.max(0) + pad
    shape = np.asarray(lm.shape)
    # voxels whose centres lie within the box (rounded outward by half a voxel: their cells touch it)
    lo = np.floor(lo_f + 0.5).astype(np.int64)
    hi = np.ceil(hi_f - 0.5).astype(np.int64) + 1
    if np.any(hi <= 0) or np.any(lo >= shape):
        raise InputError(f"the EM block maps outside the light-sheet volume: its box spans voxels "
                         f"{np.round(lo_f, 1).tolist()} .. {np.round(hi_f, 1).tolist()} of a volume of shape "
                         f"{tuple(int(s) for s in shape)}. Check the transform and the spaces' units",
                         field="transform")
    clo, chi = np.maximum(lo, 0), np.minimum(hi, shape)
    if np.any(clo != lo) or np.any(chi != hi):
        warnings.warn(f"the EM block (+margin) reaches outside the light-sheet volume; the crop is clipped to "
                      f"voxels {clo.tolist()}..{(chi - 1).tolist()}", stacklevel=2)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(clo, chi))
    origin = lm.index_to_physical(clo[None].astype(float))[0]
    return Volume(lm.data[sl], lm.voxel_size, origin, lm.direction, lm.space)
