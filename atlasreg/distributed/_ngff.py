"""Multiscale OME-Zarr (NGFF 0.4, zarr format 2) groups written one block at a time.

The layout is the one :mod:`atlasreg.io.ome_zarr` writes and reads: one array
per pyramid level (``"0"`` full resolution, each next level halved per axis),
axes named ``z, y, x`` for array axes 0, 1, 2, per-level ``scale`` and
``translation``, and ``attrs["atlasreg"]`` with the space name, unit,
orientation and the job status: ``"complete"`` appears only once every block
of every level is written. NGFF 0.4 cannot express a rotation, so the output
grid's direction must be the identity.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

NGFF_VERSION = "0.4"
_UNIT_NAMES = {"nm": "nanometer", "um": "micrometer", "mm": "millimeter"}
# Array axes 0, 1, 2 named as atlasreg.io.ome_zarr names them (no transposition: index order = array order).
AXIS_NAMES = ("z", "y", "x")


def level_shapes(shape, levels: int) -> list[tuple[int, int, int]]:
    out = [tuple(int(s) for s in shape)]
    for _ in range(1, levels):
        out.append(tuple((s + 1) // 2 for s in out[-1]))
    return out


def auto_levels(shape, chunks, max_levels: int = 8) -> int:
    """Halve until the largest axis fits in one chunk (a viewer's overview), at most ``max_levels``."""
    levels, cur = 1, np.asarray(shape)
    while levels < max_levels and np.any(cur > np.asarray(chunks)) and np.all(cur >= 2):
        cur = (cur + 1) // 2
        levels += 1
    return levels


def level_geometry(spacing, origin, direction, level: int, method: str):
    """Spacing and origin of pyramid level ``level``.

    ``"mean"`` levels average 2x2x2 voxels, so voxel 0's centre moves half a
    coarse voxel minus half a fine one; ``"nearest"`` levels keep every second
    voxel, so voxel 0 stays where it was.
    """
    f = 2 ** level
    sp = np.asarray(spacing, float) * f
    o = np.asarray(origin, float)
    if method == "mean":
        o = o + np.asarray(direction, float).reshape(3, 3) @ (np.asarray(spacing, float) * (f - 1) / 2.0)
    return sp, o


def create_pyramid(path: Path, shape, chunks, dtype, levels: int, *, spacing, origin, direction, space,
                   method: str, fill, name: str, extra: dict | None = None):
    """Create the (empty) multiscale group with NGFF metadata and status ``"incomplete"``."""
    import zarr

    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for lvl, shp in enumerate(level_shapes(shape, levels)):
        ch = tuple(int(min(c, s)) for c, s in zip(chunks, shp))
        g.create_array(str(lvl), shape=shp, chunks=ch, dtype=dtype, fill_value=np.asarray(fill, dtype)[()],
                       chunk_key_encoding={"name": "v2", "separator": "/"})
        sp, o = level_geometry(spacing, origin, direction, lvl, method)
        datasets.append({"path": str(lvl), "coordinateTransformations": [
            {"type": "scale", "scale": [float(v) for v in sp]},
            {"type": "translation", "translation": [float(v) for v in o]}]})
    unit = _UNIT_NAMES.get(space.unit)
    axes = [{"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in AXIS_NAMES]
    g.attrs["multiscales"] = [{"version": NGFF_VERSION, "name": name, "axes": axes, "datasets": datasets,
                               "type": "mean" if method == "mean" else "nearest"}]
    meta = {"status": "incomplete", "space": space.name, "unit": space.unit, "orientation": space.orientation,
            "voxel_size": [float(v) for v in spacing], "origin": [float(v) for v in origin],
            "direction": np.asarray(direction, float).reshape(3, 3).tolist(), "downsampling": method}
    meta.update(extra or {})
    g.attrs["atlasreg"] = meta
    return g


def set_status(path: Path, status: str) -> None:
    import zarr

    g = zarr.open_group(str(path), mode="r+", zarr_format=2)
    meta = dict(g.attrs.get("atlasreg", {}))
    meta["status"] = status
    g.attrs["atlasreg"] = meta


def is_complete(path) -> bool:
    """True when ``path`` is an OME-Zarr atlasreg finished writing (status ``"complete"``).

    Examples
    --------
    >>> is_complete("/nonexistent.ome.zarr")
    False
    """
    import zarr

    try:
        g = zarr.open_group(str(path), mode="r")
    except Exception:  # noqa: BLE001 - not a zarr group at all
        return False
    return dict(g.attrs.get("atlasreg", {})).get("status") == "complete"


def downsample2(a: np.ndarray, method: str) -> np.ndarray:
    """Halve each axis: 2x2x2 means (``"mean"``) or every second voxel (``"nearest"``, for labels).

    Odd axes keep their last voxel (averaged with itself).
    """
    if method == "nearest":
        return np.ascontiguousarray(a[::2, ::2, ::2])
    from . import _kernels as BK

    out = np.empty(tuple((s + 1) // 2 for s in a.shape), a.dtype)
    if a.dtype.kind == "b":
        return downsample2(a.astype(np.uint8), method) >= 1  # true where most of the 8 are
    BK.mean2(np.ascontiguousarray(a), out, a.dtype.kind in "iu")
    return out


def check_output_name(path) -> Path:
    p = Path(path)
    if not p.name.endswith(".zarr"):
        raise InputError("blockwise output is written as OME-Zarr: give a path ending in .ome.zarr (or .zarr)",
                         path=p, field="output")
    return p
