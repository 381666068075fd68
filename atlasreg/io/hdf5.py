"""HDF5 volumes (h5py), opened lazily as dask arrays.

Two layouts are read:

* **atlasreg's own**: one 3-D dataset (default name ``volume``, chunked, gzip, with
  Fletcher-32 checksums so a damaged chunk is an error, not silent garbage)
  whose attributes hold the geometry, all lengths in the ``unit`` attribute
  and every per-axis value in array axis order:

  ============== =============================================================
  attribute      meaning
  ============== =============================================================
  atlasreg_format ``"volume/1"``
  voxel_size     float64[3], spacing between voxel centres
  origin         float64[3], physical position of voxel (0, 0, 0)
  direction      float64[3, 3], D in ``p = origin + D @ (voxel_size * i)``
  unit           ``"nm"``, ``"um"`` or ``"mm"``
  space          name of the space the volume lives in
  orientation    BrainGlobe origin code (optional), e.g. ``"psl"``
  ============== =============================================================

  A dataset without these attributes has no geometry (CONVENTIONS: origin 0,
  identity direction, the caller's voxel size), except that the common
  ``element_size_um`` attribute (ilastik, ImageJ HDF5) is taken as its voxel
  size in µm.
* **BigDataViewer** (BDV / BigStitcher ``.h5``): ``t<TTTTT>/s<SS>/<level>/cells``
  datasets (stored z, y, x and read as stored) with per-level downsampling
  factors in ``s<SS>/resolutions`` (x, y, z order). 16-bit data, which BDV
  stores as signed ``int16`` but means as unsigned, is read as ``uint16``.
  The voxel size comes from the companion ``.xml`` (``<voxelSize>``) when one
  sits beside the file, otherwise from the caller (for level 0). Level ``L``
  with factor ``f`` has spacing ``f * s0`` and its voxel 0 at ``(f - 1) / 2 * s0``
  (the centre of the block it averages, as BDV places it).

Files are untrusted: HDF5 lets a dataset keep its bytes in other files
(external storage, virtual datasets) and a name point into another file
(external links), so a crafted ``.h5`` could make ``read_volume`` return any
file on disk. Such datasets and links are refused (:func:`check_self_contained`);
atlasreg reads only bytes stored in the file named.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spaces import normalize_unit
from ._checks import RawVolume, check_dtype, check_shape, open_lazy, wrap_read_error

H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
FORMAT_TAG = "volume/1"
DEFAULT_DATASET = "volume"
_BDV_SETUP = re.compile(r"^/?(?:(t\d+)/)?(s\d+)/?$")


class _Dataset:
    """Reads blocks of one dataset, opening the file for each read.

    Holding an HDF5 file open between reads would lock it: in the same process
    h5py then refuses to open it for writing ("file is already open for
    read-only"). Opening costs well under a millisecond, small next to a block read.
    """

    def __init__(self, path: str, name: str):
        self.path, self.name = path, name

    def __getitem__(self, idx):
        import h5py

        with h5py.File(self.path, "r") as f:
            return f[self.name][idx]


def check_self_contained(f, path, name: str | None = None, _depth: int = 0) -> None:
    """Refuse HDF5 content that reads bytes from other files.

    With ``name``: that dataset (every link on its path is checked too). Without: every object and
    link of the open file ``f``. Raises :class:`InputError` for an external link, a virtual dataset
    or a dataset with external raw storage.

    Examples
    --------
    >>> import h5py, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.h5"
    >>> with h5py.File(p, "w") as f:
    ...     f["v"] = h5py.ExternalLink("/etc/hostname", "/")
    >>> with h5py.File(p, "r") as f:
    ...     check_self_contained(f, p)
    Traceback (most recent call last):
    ...
    atlasreg.errors.InputError: ...external link...
    """
    import h5py

    def refuse(what: str, obj_name: str):
        raise InputError(f"{obj_name!r} is {what}: its data would be read from another file. atlasreg reads "
                         "only data stored in the file itself; copy the data in (h5repack) first", path=path,
                         field="dataset")

    def check_link(group, key: str, full: str):
        link = group.get(key, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            refuse(f"an external link (to {link.filename!r}:{link.path!r})", full)
        return link

    def check_dataset(d, full: str):
        if d.is_virtual:
            refuse("a virtual dataset", full)
        if d.external:
            refuse("a dataset with external storage", full)

    if name is not None:
        parts = [p for p in name.strip("/").split("/") if p]
        g = f
        for i, key in enumerate(parts):
            full = "/".join(parts[:i + 1])
            link = check_link(g, key, full)
            if isinstance(link, h5py.SoftLink):
                if _depth > 16:
                    raise InputError(f"{full!r}: soft links nest deeper than 16 (a loop?)", path=path,
                                     field="dataset")
                check_self_contained(f, path, link.path, _depth + 1)
            g = g[key]
        if isinstance(g, h5py.Dataset):
            check_dataset(g, name)
        return

    def visit(group, prefix: str):
        for key in group.keys():
            full = f"{prefix}/{key}" if prefix else key
            link = check_link(group, key, full)
            if isinstance(link, h5py.SoftLink):
                continue  # the object it names is visited under its own hard link
            obj = group[key]
            if isinstance(obj, h5py.Dataset):
                check_dataset(obj, full)
            elif isinstance(obj, h5py.Group):
                visit(obj, full)

    visit(f, "")


def _open_file(path: Path):
    import h5py

    try:
        if not h5py.is_hdf5(path):
            raise InputError("is not an HDF5 file (no HDF5 signature); check the file or its suffix", path=path)
        return h5py.File(path, "r")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt files fail here in many ways
        raise wrap_read_error(exc, path, "open") from exc


def _datasets_3d(f) -> list[str]:
    import h5py

    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim == 3:
            found.append(name)

    f.visititems(visit)
    return found


def _describe(f) -> str:
    import h5py

    items = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and len(items) < 20:
            items.append(f"{name} {obj.shape} {obj.dtype}")

    f.visititems(visit)
    return "; ".join(items) or "no datasets"


def read_hdf5(path: Path, dataset: str | None, level: int, allow_nonfinite: bool) -> RawVolume:
    f = _open_file(path)
    try:
        try:
            if dataset is None:
                if "t00000" in f and "s00" in f:
                    return _read_bdv(f, path, "t00000", "s00", level, allow_nonfinite)
                if DEFAULT_DATASET in f:
                    dataset = DEFAULT_DATASET
                else:
                    cands = _datasets_3d(f)
                    if len(cands) != 1:
                        raise InputError(
                            f"{'no' if not cands else len(cands)} 3-D datasets found ({_describe(f)}); pass "
                            "dataset='<path inside the file>'", path=path, field="dataset")
                    dataset = cands[0]
            m = _BDV_SETUP.match(dataset)
            if m and m.group(2) in f and (m.group(1) or "t00000") in f:
                return _read_bdv(f, path, m.group(1) or "t00000", m.group(2), level, allow_nonfinite)
            if dataset not in f:
                raise InputError(f"no dataset {dataset!r} in the file (it holds: {_describe(f)})", path=path,
                                 field="dataset")
            return _read_plain(f, path, dataset, level, allow_nonfinite)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise wrap_read_error(exc, path) from exc
    finally:
        f.close()


def _read_plain(f, path: Path, name: str, level: int, allow_nonfinite: bool) -> RawVolume:
    import h5py

    check_self_contained(f, path, name)
    d = f[name]
    if not isinstance(d, h5py.Dataset):
        raise InputError(f"{name!r} is a group, not a dataset (it holds: {list(d.keys())[:20]}); pass the "
                         "dataset's path", path=path, field="dataset")
    if level != 0:
        raise InputError(f"dataset {name!r} has a single resolution level; level={level} does not exist",
                         path=path, field="level")
    check_shape(d.shape, path, f"dataset {name!r}")
    dtype = check_dtype(d.dtype, path, f"dataset {name!r}")
    data = open_lazy(path, partial(_Dataset, str(path), name), d.shape, dtype, d.chunks, allow_nonfinite,
                     token=name)
    raw = RawVolume(data, no_geometry_hint=(
        f"dataset {name!r} records no voxel size; pass voxel_size=(axis0, axis1, axis2) in the space's unit"))
    a = d.attrs
    try:
        if "voxel_size" in a and "unit" in a:
            raw.spacing = np.asarray(a["voxel_size"], np.float64).reshape(3)
            raw.origin = np.asarray(a.get("origin", np.zeros(3)), np.float64).reshape(3)
            raw.direction = np.asarray(a.get("direction", np.eye(3)), np.float64).reshape(3, 3)
            raw.file_unit = normalize_unit(_text(a["unit"]))
            raw.recorded_unit = raw.file_unit
            raw.space_name = _text(a["space"]) if "space" in a else None
            raw.orientation = _text(a["orientation"]) if "orientation" in a else None
        elif "element_size_um" in a:
            raw.spacing = np.asarray(a["element_size_um"], np.float64).reshape(3)
            raw.file_unit = "um"
    except InputError as exc:
        raise InputError(str(exc), path=path, field="unit") from exc
    except (TypeError, ValueError) as exc:
        raise InputError(f"geometry attributes of dataset {name!r} are damaged ({exc})", path=path) from exc
    raw.spacing0 = raw.spacing
    return raw


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _read_bdv(f, path: Path, tp: str, setup: str, level: int, allow_nonfinite: bool) -> RawVolume:
    import h5py

    if f"{setup}/resolutions" not in f:
        raise InputError(f"BigDataViewer setup {setup!r} has no 'resolutions' table", path=path, field="dataset")
    check_self_contained(f, path, f"{setup}/resolutions")
    res = np.asarray(f[f"{setup}/resolutions"][()], np.float64)
    if res.ndim != 2 or res.shape[1] != 3 or not np.all(np.isfinite(res)) or np.any(res <= 0):
        raise InputError(f"{setup}/resolutions must be an (levels, 3) table of positive factors, got shape "
                         f"{res.shape}", path=path, field="resolutions")
    if not 0 <= level < len(res):
        raise InputError(f"level {level} does not exist; {setup} has levels 0..{len(res) - 1}", path=path,
                         field="level")
    name = f"{tp}/{setup}/{level}/cells"
    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise InputError(f"BigDataViewer dataset {name!r} is missing", path=path, field="dataset")
    check_self_contained(f, path, name)
    d = f[name]
    check_shape(d.shape, path, name)
    stored = check_dtype(d.dtype, path, name)
    declared = f[setup].attrs.get("dataType")
    view = np.uint16 if (declared is None and stored == np.int16) else None  # BDV's 16-bit convention
    data = open_lazy(path, partial(_Dataset, str(path), name), d.shape, stored, d.chunks, allow_nonfinite,
                     token=name, view_dtype=view)
    factor = res[level][::-1]   # resolutions are x, y, z; the cells array is z, y, x
    raw = RawVolume(data, factor=factor / res[0][::-1], no_geometry_hint=(
        "this BigDataViewer file has no companion .xml with a voxel size; pass voxel_size= for level 0 in "
        "array order (z, y, x)"))
    xml_vs = _bdv_xml_voxel_size(path, int(setup[1:]))
    if xml_vs is not None:
        vs0, unit = xml_vs
        raw.spacing0 = vs0
        raw.spacing = vs0 * raw.factor
        raw.origin = (raw.factor - 1) / 2 * vs0
        raw.file_unit = unit
    return raw


def _bdv_xml_voxel_size(h5path: Path, setup_id: int):
    """Level-0 voxel size in array order (z, y, x) and its unit from the BDV .xml beside the file, if any."""
    xml = h5path.with_suffix(".xml")
    if not xml.is_file():
        return None
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise InputError(f"the BigDataViewer XML beside the file cannot be parsed ({exc})", path=xml) from exc
    for vs in root.iter("ViewSetup"):
        sid = vs.findtext("id")
        if sid is None or int(sid.strip()) != setup_id:
            continue
        size, unit = vs.findtext("voxelSize/size"), vs.findtext("voxelSize/unit")
        if size is None:
            return None
        try:
            xyz = np.asarray([float(t) for t in size.split()], np.float64)
            u = normalize_unit(unit or "um")
        except (ValueError, InputError) as exc:
            raise InputError(f"voxelSize of ViewSetup {setup_id} is not understood ({exc})", path=xml,
                             field="voxelSize") from exc
        if xyz.shape != (3,):
            raise InputError(f"voxelSize of ViewSetup {setup_id} needs 3 numbers, got {size!r}", path=xml,
                             field="voxelSize")
        return xyz[::-1].copy(), u
    return None


def write_hdf5(vol, tmp: Path, dataset: str, chunks, geometry: dict) -> None:
    """One chunked, gzip-compressed, checksummed dataset with the geometry attributes above; dask data is
    stored blockwise."""
    import h5py

    data = vol.data
    with h5py.File(tmp, "w") as f:
        d = f.create_dataset(dataset, shape=data.shape, dtype=data.dtype, chunks=chunks, compression="gzip",
                             compression_opts=1, shuffle=True, fletcher32=True)
        if hasattr(data, "compute"):
            import dask.array as da

            da.store(data, d, lock=True)
        else:
            arr = np.asarray(data)
            step = max(1, chunks[0])
            for s in range(0, arr.shape[0], step):
                d[s:s + step] = arr[s:s + step]
        d.attrs["atlasreg_format"] = FORMAT_TAG
        d.attrs["voxel_size"] = np.asarray(geometry["voxel_size"], np.float64)
        d.attrs["origin"] = np.asarray(geometry["origin"], np.float64)
        d.attrs["direction"] = np.asarray(geometry["direction"], np.float64)
        d.attrs["unit"] = geometry["unit"]
        d.attrs["space"] = geometry["space"]
        if geometry.get("orientation"):
            d.attrs["orientation"] = geometry["orientation"]
