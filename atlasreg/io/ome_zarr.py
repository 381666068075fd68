"""OME-Zarr (OME-NGFF 0.4 on Zarr v2, 0.5 on Zarr v3) volumes, with zarr directly.

Reading opens one level of the multiscale pyramid lazily as a dask array. Its
geometry comes from the level's ``scale`` and ``translation``
coordinateTransformations (then the multiscale-wide ones, if any) and the
axes' units: voxel ``i`` sits at ``scale * i + translation`` per array axis,
so the direction is the identity. Time and channel axes of length 1 are
dropped; longer ones are an error (pick one first).

Writing makes a pyramid blockwise from dask (never the whole volume in
memory): level 0 is the volume itself; each further level halves the axes
whose voxels are not already much coarser than the finest one, averaging
2-voxel blocks (``downsample="mean"``, anti-aliased; its voxel 0 sits at the
centre of the block it averages) or taking every other voxel
(``downsample="nearest"``, for label volumes). Each level is computed from the
level written before it, read back from disk. Axes are named ``z, y, x`` for
array axes 0, 1, 2 (NGFF's usual names; atlasreg's index order is the array
order). NGFF 0.4/0.5 cannot express a rotation, so a volume whose direction
is not the identity is refused: write NIfTI/NRRD/HDF5, or resample it first.

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
from ..spaces import normalize_unit
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


def _downsample(src, step, dtype, mode: str, out_chunks):
    import dask.array as da

    step = [int(s) for s in step]
    keep = tuple(slice(0, (n // s) * s) for n, s in zip(src.shape, step))
    x = src[keep]
    if mode == "nearest":
        return x[tuple(slice(None, None, s) for s in step)].rechunk(out_chunks)
    x = x.rechunk(tuple(c * s for c, s in zip(out_chunks, step)))
    work = np.float64 if dtype.itemsize > 4 or dtype == np.float64 else np.float32
    m = da.coarsen(np.mean, x.astype(work), {i: s for i, s in enumerate(step)}, trim_excess=True)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        m = da.clip(da.rint(m), info.min, info.max)
    return m.astype(dtype)


def write_ome_zarr(vol, tmp: Path, chunks, geometry: dict, levels: int | None = None, ngff_version: str = "0.4",
                   downsample: str = "mean") -> None:
    import dask.array as da
    import zarr

    zarr_format = 2 if ngff_version == "0.4" else 3
    dtype = np.dtype(vol.data.dtype)
    data = vol.data if hasattr(vol.data, "compute") else da.from_array(np.asarray(vol.data), chunks=chunks)
    vs0 = np.asarray(geometry["voxel_size"], np.float64)
    origin0 = np.asarray(geometry["origin"], np.float64)
    mode = "nearest" if dtype == np.bool_ else downsample
    factors = level_factors(data.shape, vs0, levels)
    group = zarr.open_group(store=str(tmp), mode="w", zarr_format=zarr_format)
    kw = {"chunk_key_encoding": {"name": "v2", "separator": "/"}} if zarr_format == 2 else {}
    datasets, prev, prev_f = [], None, None
    for k, f in enumerate(factors):
        if k == 0:
            x = data
        else:
            step = f // prev_f
            out_chunks = _clip(chunks, [n // s for n, s in zip(prev.shape, step)])
            x = _downsample(da.from_zarr(prev), step, dtype, mode, out_chunks)
        c = _clip(chunks, x.shape)
        x = x.rechunk(c)
        arr = group.create_array(str(k), shape=x.shape, chunks=c, dtype=dtype, **kw)
        da.store(x, arr, lock=False)  # chunk-aligned: every block goes to its own zarr chunks
        scale = vs0 * f
        trans = origin0 + ((f - 1) / 2 * vs0 if mode == "mean" else 0.0)
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [float(v) for v in scale]},
            {"type": "translation", "translation": [float(v) for v in trans]}]})
        prev, prev_f = arr, f
    unit = _UNIT_TO_NGFF[geometry["unit"]]
    ms = {"axes": [{"name": n, "type": "space", "unit": unit} for n in ("z", "y", "x")],
          "datasets": datasets, "name": geometry["space"], "type": mode,
          "metadata": {"description": "written by atlasreg", "method": "dask coarsen mean" if mode == "mean"
                       else "every other voxel"}}
    extra = {"space": geometry["space"], "orientation": geometry.get("orientation"), "unit": geometry["unit"]}
    if ngff_version == "0.4":
        group.attrs.update({"multiscales": [{"version": "0.4", **ms}], "atlasreg": extra})
    else:
        group.attrs.update({"ome": {"version": "0.5", "multiscales": [ms]}, "atlasreg": extra})


def _clip(chunks, shape):
    return tuple(max(1, min(int(c), int(n))) for c, n in zip(chunks, shape))
