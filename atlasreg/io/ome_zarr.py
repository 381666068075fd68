"""OME-Zarr (OME-NGFF 0.4 on Zarr v2, 0.5 on Zarr v3) volumes, with zarr directly.

Reading opens one level of the multiscale pyramid lazily as a dask array. Its
geometry comes from the level's ``scale`` and ``translation``
coordinateTransformations (then the multiscale-wide ones, if any) and the
axes' units: voxel ``i`` sits at ``scale * i + translation`` per array axis,
so the direction is the identity. Time and channel axes of length 1 are
dropped; longer ones are an error (pick one first).

This is atlasreg's one OME-Zarr writer: :func:`write_ome_zarr` (``write_volume``),
the EM pyramids (:mod:`atlasreg.em.pyramid`) and the blockwise warp
(:mod:`atlasreg.distributed`) all lay out their stores with
:func:`create_multiscale` and downsample with :func:`downsample_block`.

Writing makes a pyramid blockwise from dask (never the whole volume in
memory): level 0 is the volume itself; each further level halves the axes
whose voxels are not already much coarser than the finest one
(:func:`level_factors`; the blockwise warp halves every axis), averaging the
blocks (``downsample="mean"``, anti-aliased; its voxel 0 sits at the centre
of the block it averages) or taking every other voxel
(``downsample="nearest"``, for label volumes). A level has ``n // f`` voxels
along an axis of ``n`` (a last incomplete block is left out, so every voxel
of every level sits exactly where its geometry says). Each level is computed
from the level written before it, read back from disk.

Axes are named ``z, y, x`` for array axes 0, 1, 2 (:data:`atlasreg.spaces.AXIS_NAMES`,
NGFF's usual names): the names are listed in array-axis order, the order of
atlasreg's coordinates, exactly as :mod:`atlasreg.transforms.ngff` names the
axes of the same space, so a volume and a transform in one space agree axis by
axis. (Readers, atlasreg's included, go by the order of the ``axes`` list,
not by the letters.) NGFF
0.4/0.5 cannot express a rotation, so a volume whose direction is not the
identity is refused: write NIfTI/NRRD/HDF5, or resample it first.

atlasreg also records ``{"atlasreg": {"space": ..., "orientation": ...}}`` in
the root attributes so the space name and orientation survive a round trip. A
store whose ``atlasreg.status`` is present but not ``"complete"`` (a resumable
blockwise job that has not finished) is refused.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spaces import AXIS_NAMES, normalize_unit
from ._checks import RawVolume, check_dtype, check_shape, open_lazy, wrap_read_error

ZARR_SUFFIXES = (".zarr",)  # ".ome.zarr" ends with ".zarr" too
NGFF_VERSIONS = ("0.4", "0.5")

# UDUNITS-2 length names NGFF allows, as micrometres.
_NGFF_UNIT_UM = {"angstrom": 1e-4, "picometer": 1e-6, "nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3,
                 "centimeter": 1e4, "decimeter": 1e5, "meter": 1e6}
_UNIT_TO_NGFF = {"nm": "nanometer", "um": "micrometer", "mm": "millimeter"}
_NGFF_TO_UNIT = {v: k for k, v in _UNIT_TO_NGFF.items()}


def _open(path: Path):
    import zarr

    try:
        return zarr.open(store=str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - missing/corrupt metadata surfaces as many exception types
        raise wrap_read_error(exc, path, "open the Zarr store") from exc


def _open_array(path: str):
    import zarr

    return zarr.open_array(store=path, mode="r")


def _multiscales(attrs, path: Path):
    if "ome" in attrs and isinstance(attrs["ome"], dict) and "multiscales" in attrs["ome"]:
        ms, version = attrs["ome"]["multiscales"], str(attrs["ome"].get("version", ""))
    elif "multiscales" in attrs:
        ms = attrs["multiscales"]
        version = str(ms[0].get("version", "")) if isinstance(ms, list) and ms and isinstance(ms[0], dict) else ""
    else:
        return None, None
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict):
        raise InputError("'multiscales' metadata must be a non-empty list of objects", path=path,
                         field="multiscales")
    return ms[0], version


def read_ome_zarr(path: Path, dataset: str | None, level: int, allow_nonfinite: bool) -> RawVolume:
    import zarr

    root = path / dataset if dataset else path
    if dataset and not root.exists():
        raise InputError(f"no group or array {dataset!r} inside the store", path=path, field="dataset")
    node = _open(root)
    if isinstance(node, zarr.Array):
        if level != 0:
            raise InputError(f"a plain Zarr array has a single level; level={level} does not exist", path=root,
                             field="level")
        return _plain(node, root, allow_nonfinite)
    try:
        attrs = dict(node.attrs)
    except Exception as exc:  # noqa: BLE001
        raise wrap_read_error(exc, root, "read the attributes of") from exc
    ms, version = _multiscales(attrs, root)
    if ms is None:
        raise InputError("the Zarr group has no OME-NGFF 'multiscales' metadata; pass dataset='<array path>' "
                         f"to read one array without geometry (it holds: {sorted(node.keys())[:20]})",
                         path=root, field="multiscales")
    return _read_multiscale(node, root, ms, version, level, allow_nonfinite, attrs.get("atlasreg"))


def _plain(arr, path: Path, allow_nonfinite: bool) -> RawVolume:
    check_shape(arr.shape, path, "the Zarr array")
    dtype = check_dtype(arr.dtype, path, "the Zarr array")
    data = open_lazy(path, partial(_open_array, str(path)), arr.shape, dtype, arr.chunks, allow_nonfinite)
    return RawVolume(data, no_geometry_hint="this Zarr array records no voxel size; pass voxel_size=")


def _axes(ms: dict, path: Path) -> list[dict]:
    axes = ms.get("axes")
    if axes is None:  # NGFF <= 0.3 had none: always 5-D t, c, z, y, x
        axes = ["t", "c", "z", "y", "x"]
    if not isinstance(axes, list) or not axes:
        raise InputError("'axes' must be a non-empty list", path=path, field="axes")
    out = []
    for a in axes:
        if isinstance(a, str):
            a = {"name": a}
        if not isinstance(a, dict) or "name" not in a:
            raise InputError(f"axis {a!r} has no name", path=path, field="axes")
        t = a.get("type") or ("space" if a["name"] in ("x", "y", "z") else
                              "time" if a["name"] == "t" else "channel" if a["name"] == "c" else None)
        out.append({"name": str(a["name"]), "type": t, "unit": a.get("unit")})
    return out


def _transform(cts, n: int, path: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    scale, trans = np.ones(n), np.zeros(n)
    if cts is None:
        return scale, trans
    if not isinstance(cts, list):
        raise InputError(f"coordinateTransformations of {where} must be a list", path=path,
                         field="coordinateTransformations")
    for ct in cts:
        kind = ct.get("type") if isinstance(ct, dict) else None
        if kind == "identity":
            continue
        if kind not in ("scale", "translation"):
            raise InputError(f"coordinateTransformation {ct!r} of {where} is not supported (atlasreg reads "
                             "'scale' and 'translation')", path=path, field="coordinateTransformations")
        if kind not in ct:
            raise InputError(f"{kind} transformation of {where} gives no values inline (a 'path' to a "
                             "binary array is not supported)", path=path, field="coordinateTransformations")
        try:
            v = np.asarray(ct[kind], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{kind} of {where} is not a list of numbers: {ct[kind]!r}", path=path,
                             field=kind) from None
        if v.ndim != 1 or len(v) != n:
            raise InputError(f"{kind} of {where} has {v.size} values but there are {n} axes; the geometry "
                             "contradicts itself", path=path, field=kind)
        if not np.all(np.isfinite(v)):
            raise InputError(f"{kind} of {where} has non-finite values {v.tolist()}", path=path, field=kind)
        if kind == "scale":
            scale = scale * v
            trans = trans * v
        else:
            trans = trans + v
    return scale, trans


def _units(axes, space_idx, path: Path):
    """(file_unit, per-axis factor into it) for the space axes."""
    units = [axes[i]["unit"] for i in space_idx]
    if all(u is None for u in units):
        return None, np.ones(3)
    if any(u is None for u in units):
        raise InputError(f"some space axes give a unit and some do not ({units}); give all or none", path=path,
                         field="axes")
    canon = []
    for u in units:
        key = str(u).strip().lower()
        if key in _NGFF_UNIT_UM:
            canon.append(key)
            continue
        try:
            canon.append(_UNIT_TO_NGFF[normalize_unit(key)])
        except InputError:
            raise InputError(f"axis unit {u!r} is not a length unit atlasreg understands (use e.g. 'micrometer', "
                             "'nanometer', 'millimeter')", path=path, field="unit") from None
    if len(set(canon)) == 1 and canon[0] in _NGFF_TO_UNIT:
        return _NGFF_TO_UNIT[canon[0]], np.ones(3)
    return "um", np.array([_NGFF_UNIT_UM[c] for c in canon])  # mixed or unusual units: express all in µm


def _read_multiscale(group, path: Path, ms: dict, version: str, level: int, allow_nonfinite: bool,
                     extra) -> RawVolume:
    if isinstance(extra, dict) and extra.get("status") not in (None, "complete"):
        # atlasreg's resumable blockwise writers (atlasreg.distributed) mark a store complete at the end.
        raise InputError(f"the store is marked {extra.get('status')!r}: its writer did not finish. Rerun or "
                         "resume the job that writes it", path=path, field="status")
    axes = _axes(ms, path)
    n = len(axes)
    space_idx = [i for i, a in enumerate(axes) if a["type"] == "space"]
    if len(space_idx) != 3:
        raise InputError(f"the image has {len(space_idx)} space axes ({[a['name'] for a in axes]}); a volume "
                         "needs 3", path=path, field="axes")
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise InputError("'datasets' must list the pyramid levels", path=path, field="datasets")
    if not 0 <= level < len(datasets):
        raise InputError(f"level {level} does not exist; the pyramid has levels 0..{len(datasets) - 1}",
                         path=path, field="level")
    g_scale, g_trans = _transform(ms.get("coordinateTransformations"), n, path, "the multiscale")

    def geometry(k):
        ds = datasets[k]
        if not isinstance(ds, dict) or "path" not in ds:
            raise InputError(f"dataset {k} has no 'path'", path=path, field="datasets")
        s, t = _transform(ds.get("coordinateTransformations"), n, path, f"level {k} ({ds['path']!r})")
        s, t = s * g_scale, t * g_scale + g_trans
        if np.any(s[space_idx] <= 0):
            raise InputError(f"scale of level {k} must be positive, got {s.tolist()}", path=path, field="scale")
        return str(ds["path"]), s, t

    sub, scale, trans = geometry(level)
    _, scale0, _ = geometry(0)
    arr_path = path / sub
    if not arr_path.exists():
        raise InputError(f"level {level} array {sub!r} is missing from the store", path=path, field="datasets")
    try:
        arr = group[sub]
        shape, dtype, chunks = tuple(arr.shape), arr.dtype, tuple(arr.chunks)
    except Exception as exc:  # noqa: BLE001
        raise wrap_read_error(exc, arr_path, "open") from exc
    if len(shape) != n:
        raise InputError(f"level {level} array has {len(shape)} dimensions but 'axes' lists {n}; the metadata "
                         "contradicts the data", path=path, field="axes")
    for i, a in enumerate(axes):
        if i not in space_idx and shape[i] != 1:
            raise InputError(f"axis {a['name']!r} ({a['type']}) has {shape[i]} entries; atlasreg volumes are "
                             "single-channel 3-D images: extract one first", path=path, field="axes")
    check_dtype(dtype, path, f"level {level}")
    check_shape([shape[i] for i in space_idx], path, f"level {level}")
    data = open_lazy(arr_path, partial(_open_array, str(arr_path)), shape, dtype, chunks, allow_nonfinite,
                     token=str(level))
    if n != 3:
        data = data[tuple(slice(None) if i in space_idx else 0 for i in range(n))]
    file_unit, per_axis = _units(axes, space_idx, path)
    raw = RawVolume(data, spacing=scale[space_idx] * per_axis, origin=trans[space_idx] * per_axis,
                    file_unit=file_unit, spacing0=scale0[space_idx] * per_axis)
    raw.recorded_unit = file_unit
    raw.space_name = ms.get("name") or None
    if isinstance(extra, dict):
        raw.space_name = extra.get("space") or raw.space_name
        raw.orientation = extra.get("orientation") or None
    return raw


# -- writing -------------------------------------------------------------------------------------------------

def level_factors(shape, spacing, levels: int | None, min_size: int = 64, max_levels: int = 10) -> list[np.ndarray]:
    """Per-level cumulative downsampling factors (level 0 first).

    An axis is halved while its voxels are under twice the finest voxel size
    of that level (so an EM stack of 4x4x40 nm first halves only in-plane) and
    it has at least 2 voxels. Without ``levels``, halving stops once every
    axis is at most ``min_size`` voxels.

    Examples
    --------
    >>> [f.tolist() for f in level_factors((8, 256, 256), (40, 4, 4), 3)]
    [[1, 1, 1], [1, 2, 2], [1, 4, 4]]
    """
    shape = np.asarray(shape, np.int64)
    vs = np.asarray(spacing, np.float64)
    f = np.ones(3, np.int64)
    out = [f.copy()]
    while len(out) < (levels if levels is not None else max_levels):
        cur = shape // f
        if levels is None and cur.max() <= min_size:
            break
        cvs = vs * f
        can = cur >= 2
        if not can.any():
            break
        # the finest axis that can still be halved: a 1-voxel axis must not stop the others
        step = np.where((cvs < 2 * cvs[can].min() * (1 + 1e-9)) & can, 2, 1)
        if np.all(step == 1):
            break
        f = f * step
        out.append(f.copy())
    return out


def level_geometry(voxel_size, origin, factor, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Voxel size and origin of a level ``factor`` times coarser than level 0 (identity direction).

    ``"mean"`` levels average ``factor`` blocks, so voxel 0 sits at the block's centre,
    ``origin + (factor - 1) / 2 * voxel_size``; ``"nearest"`` levels keep voxel 0 where it was.

    Examples
    --------
    >>> [v.tolist() for v in level_geometry((40, 4, 4), (0, 0, 0), (1, 2, 2), "mean")]
    [[40.0, 8.0, 8.0], [0.0, 2.0, 2.0]]
    """
    vs = np.asarray(voxel_size, np.float64)
    f = np.asarray(factor, np.float64)
    o = np.asarray(origin, np.float64)
    return vs * f, (o + (f - 1) / 2 * vs if method == "mean" else o.copy())


def downsample_block(a, step, method: str = "mean") -> np.ndarray:
    """One block of a coarser level: the mean of each ``step`` block (``"mean"``) or its first voxel (``"nearest"``).

    atlasreg's one downsampler (the OME-Zarr writer, EM pyramids, the blockwise warp). An axis of ``n``
    voxels gives ``n // step`` (an incomplete last block is left out). Means are taken in float64 (float32
    for float32 and integers of up to 16 bits, where that is exact) and integers are rounded half to even.
    Boolean (label) blocks always take the first voxel.

    Examples
    --------
    >>> downsample_block(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), (2, 2, 2)).tolist()
    [[[4]]]
    >>> downsample_block(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), (1, 1, 2), "nearest")[..., 0].tolist()
    [[0, 2], [4, 6]]
    """
    a = np.asarray(a)
    step = tuple(int(s) for s in step)
    n = tuple(d // s for d, s in zip(a.shape, step))
    a = a[tuple(slice(0, k * s) for k, s in zip(n, step))]
    if method == "nearest" or a.dtype == np.bool_:
        return np.ascontiguousarray(a[tuple(slice(None, None, s) for s in step)])
    if method != "mean":
        raise InputError(f"downsample must be 'mean' or 'nearest', got {method!r}", field="downsample")
    exact32 = a.dtype == np.float32 or (a.dtype.kind in "iu" and a.dtype.itemsize <= 2)
    work = np.float32 if exact32 else np.float64
    m = a.reshape(n[0], step[0], n[1], step[1], n[2], step[2]).mean(axis=(1, 3, 5), dtype=work)
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        m = np.clip(np.rint(m), info.min, info.max)
    return m.astype(a.dtype, copy=False)


def downsample_dask(src, step, method: str, out_chunks):
    """A dask array ``step`` times coarser than ``src`` (:func:`downsample_block` on every block).

    Blocks are ``step`` times ``out_chunks``, so one task reads about one output chunk's worth per voxel of it.
    """
    step = tuple(int(s) for s in step)
    keep = tuple(slice(0, (n // s) * s) for n, s in zip(src.shape, step))
    x = src[keep].rechunk(tuple(max(1, int(c)) * s for c, s in zip(out_chunks, step)))
    chunks = tuple(tuple(b // s for b in bc) for bc, s in zip(x.chunks, step))
    return x.map_blocks(downsample_block, step, method, dtype=x.dtype, chunks=chunks)


def create_multiscale(path, shape, chunks, dtype, factors, geometry: dict, method: str, *,
                      ngff_version: str = "0.4", fill=None, name: str | None = None, status: str | None = None,
                      extra: dict | None = None):
    """Create an empty multiscale OME-Zarr group (one array per level) with its NGFF metadata; return the group.

    Parameters
    ----------
    path : folder of the store
    shape, chunks, dtype : level 0's shape, the chunk shape of every level (clipped to the level), the dtype
    factors : per-level cumulative factors (level 0 first), e.g. from :func:`level_factors`
    geometry : ``voxel_size``, ``origin`` (level 0, identity direction), ``unit``, ``space``, ``orientation``
    method : ``"mean"`` or ``"nearest"`` (how the levels are made; sets each level's ``translation``)
    ngff_version : ``"0.4"`` (Zarr v2) or ``"0.5"`` (Zarr v3)
    fill : the arrays' fill value (what unwritten chunks read as)
    status : recorded as ``attrs["atlasreg"]["status"]``; readers refuse a store that is not ``"complete"``
        (see :func:`set_status`)
    extra : more keys for ``attrs["atlasreg"]``

    Examples
    --------
    >>> import tempfile, pathlib
    >>> g = create_multiscale(pathlib.Path(tempfile.mkdtemp()) / "v.ome.zarr", (8, 8, 8), (4, 4, 4), "uint8",
    ...                       level_factors((8, 8, 8), (1, 1, 1), 2), {"voxel_size": [1, 1, 1], "origin": [0, 0, 0],
    ...                       "unit": "um", "space": "s"}, "mean")
    >>> [a["name"] for a in g.attrs["multiscales"][0]["axes"]], g["1"].shape
    (['z', 'y', 'x'], (4, 4, 4))
    """
    import zarr

    zarr_format = 2 if str(ngff_version) == "0.4" else 3
    dtype = np.dtype(dtype)
    group = zarr.open_group(store=str(path), mode="w", zarr_format=zarr_format)
    kw = {"chunk_key_encoding": {"name": "v2", "separator": "/"}} if zarr_format == 2 else {}
    if fill is not None:
        kw["fill_value"] = np.asarray(fill, dtype)[()]
    shape0 = np.asarray(shape, np.int64)
    datasets = []
    for k, f in enumerate(factors):
        shp = tuple(int(v) for v in shape0 // np.asarray(f, np.int64))
        group.create_array(str(k), shape=shp, chunks=_clip(chunks, shp), dtype=dtype, **kw)
        scale, trans = level_geometry(geometry["voxel_size"], geometry["origin"], f, method)
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [float(v) for v in scale]},
            {"type": "translation", "translation": [float(v) for v in trans]}]})
    unit = _UNIT_TO_NGFF.get(geometry.get("unit"))
    axes = [{"name": n, "type": "space", **({"unit": unit} if unit else {})} for n in AXIS_NAMES]
    ms = {"axes": axes, "datasets": datasets, "name": name or geometry.get("space"), "type": method,
          "metadata": {"description": "written by atlasreg", "method": "block mean" if method == "mean"
                       else "first voxel of each block"}}
    meta = {"space": geometry.get("space"), "orientation": geometry.get("orientation"), "unit": geometry.get("unit"),
            "downsampling": method}
    if status is not None:
        meta["status"] = status
    meta.update(extra or {})
    if zarr_format == 2:
        group.attrs.update({"multiscales": [{"version": "0.4", **ms}], "atlasreg": meta})
    else:
        group.attrs.update({"ome": {"version": "0.5", "multiscales": [ms]}, "atlasreg": meta})
    return group


def set_status(path, status: str) -> None:
    """Record ``attrs["atlasreg"]["status"]`` of a store made by :func:`create_multiscale` (``"complete"`` at the end)."""
    import zarr

    g = zarr.open_group(str(path), mode="r+")
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


def write_ome_zarr(vol, tmp: Path, chunks, geometry: dict, levels: int | None = None, ngff_version: str = "0.4",
                   downsample: str = "mean") -> None:
    import dask.array as da

    dtype = np.dtype(vol.data.dtype)
    data = vol.data if hasattr(vol.data, "compute") else da.from_array(np.asarray(vol.data), chunks=chunks)
    mode = "nearest" if dtype == np.bool_ else downsample
    factors = level_factors(data.shape, geometry["voxel_size"], levels)
    group = create_multiscale(tmp, data.shape, chunks, dtype, factors, geometry, mode, ngff_version=ngff_version)
    prev, prev_f = None, None
    for k, f in enumerate(factors):
        arr = group[str(k)]
        if k == 0:
            x = data
        else:
            x = downsample_dask(da.from_zarr(prev), f // prev_f, mode, arr.chunks)
        da.store(x.rechunk(arr.chunks), arr, lock=False)  # chunk-aligned: every block goes to its own zarr chunks
        prev, prev_f = arr, f


def _clip(chunks, shape):
    return tuple(max(1, min(int(c), int(n))) for c, n in zip(chunks, shape))
