"""Read and write volumes: NIfTI, NRRD, TIFF (file or slice folder), HDF5 (incl. BigDataViewer), OME-Zarr,
neuroglancer precomputed.

The geometry follows CONVENTIONS.md exactly:

* NIfTI/NRRD (SimpleITK): origin, spacing and direction as SimpleITK reports
  them (LPS, mm), converted into the space's unit; the array is the transpose
  of ``SimpleITK.GetArrayFromImage`` (index ``(i, j, k)`` is SimpleITK's).
* TIFF, HDF5 and plain arrays: the array as read, origin 0, identity
  direction, spacing = the caller's voxel size (required: a TIFF has none).
* OME-Zarr: NGFF ``scale``/``translation`` per array axis; identity direction.
* Neuroglancer precomputed: axes x, y, z; voxel centre ``(voxel_offset + i + 0.5) * resolution`` nm
  (see :mod:`atlasreg.io.precomputed`); identity direction.
* Writing keeps the frame: what atlasreg writes, it (and SimpleITK, for
  NIfTI/NRRD) reads back with the same voxel positions. Outputs are written
  atomically (:mod:`atlasreg.io.atomic`) and never overwrite without ``force``.

Every reader validates before any long computation: missing or damaged files,
non-3-D data, complex/object data, NaN/inf in float data, bad voxel sizes and
self-contradicting geometry all raise :class:`~atlasreg.errors.InputError`
naming the file and what to do.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spaces import Space, as_voxel_size, normalize_unit, unit_scale, validate_orientation
from ..volume import Volume
from ._checks import (RawVolume, check_direction, check_dtype, check_exists, check_shape, count_nonfinite,
                      nonfinite_error, wrap_read_error)
from .atomic import atomic_path, check_writable

__all__ = ["read_volume", "write_volume", "volume_format", "FORMATS"]

#: format name -> suffixes (lower case) it is chosen by
FORMATS = {
    "nifti": (".nii", ".nii.gz"),
    "nrrd": (".nrrd", ".nhdr"),
    "tiff": (".tif", ".tiff"),
    "hdf5": (".h5", ".hdf5", ".hdf", ".he5"),
    "ome-zarr": (".ome.zarr", ".zarr"),
    "precomputed": (".precomputed",),
}
_SITK_IO = {"nifti": "NiftiImageIO", "nrrd": "NrrdImageIO"}
DEFAULT_CHUNKS = {"hdf5": 64, "ome-zarr": 128}


def volume_format(path: str | os.PathLike, reading: bool = True) -> str:
    """The format a path is read or written as: ``nifti``, ``nrrd``, ``tiff``, ``tiff-folder``, ``hdf5``, ``ome-zarr``,
    ``precomputed``.

    Chosen by suffix (case-insensitive), or ``precomputed`` for a ``precomputed://`` URL; when reading, a
    folder without a known suffix is a Zarr store if it holds Zarr metadata, a neuroglancer precomputed
    dataset if its ``info`` file has ``scales``, else a folder of TIFF slices.

    >>> volume_format("brain.nii.gz", reading=False)
    'nifti'
    """
    from .precomputed import precomputed_source

    if isinstance(path, str) and path.lower().startswith("precomputed:"):
        return "precomputed"
    p = Path(path)
    name = p.name.lower()
    for fmt, sufs in FORMATS.items():
        if any(name.endswith(s) for s in sufs):
            if fmt == "tiff" and reading and p.is_dir():
                return "tiff-folder"
            return fmt
    if reading and p.is_dir():
        if any((p / m).exists() for m in ("zarr.json", ".zgroup", ".zarray", ".zattrs")):
            return "ome-zarr"
        if precomputed_source(p) is not None:
            return "precomputed"
        return "tiff-folder"
    supported = ", ".join(s for sufs in FORMATS.values() for s in sufs)
    raise InputError(f"unknown volume format {p.suffix or '(no suffix)'!r}; use one of {supported}"
                     + (" or a folder of TIFF slices" if reading else ""), path=p, field="suffix")


# -- reading --------------------------------------------------------------------------------------------------

def read_volume(path: str | os.PathLike, voxel_size=None, orientation: str | None = None,
                space: Space | str | None = None, unit: str | None = None, dataset: str | None = None,
                level: int = 0, *, override: bool = False, allow_nonfinite: bool = False) -> Volume:
    """Read a 3-D volume and place it in a space.

    Parameters
    ----------
    path : str or Path
        ``.nii``, ``.nii.gz``, ``.nrrd``/``.nhdr``, ``.tif``/``.tiff`` (a stack,
        or a folder of 2-D slices sorted by the numbers in their names),
        ``.h5``/``.hdf5`` (see :mod:`atlasreg.io.hdf5`), ``.ome.zarr``/``.zarr``
        (OME-NGFF 0.4 or 0.5, Zarr v2 or v3; see :mod:`atlasreg.io.ome_zarr`),
        neuroglancer precomputed: ``precomputed://file:///...``, ``precomputed://gs://...``,
        ``precomputed://https://...`` or a local precomputed folder (see :mod:`atlasreg.io.precomputed`;
        needs ``pip install 'atlasreg[precomputed]'``).
    voxel_size : float or 3 floats, optional
        Voxel spacing per array axis, in the space's unit, of the full
        resolution (level 0). Required where the file records none (TIFF,
        plain HDF5/Zarr arrays, BigDataViewer files without their .xml). For
        files that do record one, a different value is an error unless
        ``override=True``, which replaces the file's spacing (origin and
        direction are kept).
    orientation : str, optional
        BrainGlobe origin code of the array axes (``"psl"``); metadata, it does
        not change the geometry. Contradicting an orientation the file records
        is an error unless ``override=True``.
    space : str or Space, optional
        The space the volume lives in. Default: the name the file records
        (files written by atlasreg), else ``"unnamed"``.
    unit : str, optional
        Unit of the space (``"nm"``, ``"um"``, ``"mm"``) if ``space`` is a name.
        Default: the unit the file records for its space (atlasreg files,
        OME-Zarr axis units), else ``"um"``. Lengths in the file are converted
        into it (NIfTI/NRRD positions are mm: a ``"um"`` space multiplies by 1000).
    dataset : str, optional
        HDF5: path of the dataset inside the file, or a BigDataViewer setup
        (``"s01"``, ``"t00002/s00"``); default: ``volume``, BigDataViewer
        ``t00000/s00``, or the only 3-D dataset. OME-Zarr: path of the
        multiscale group (or of a plain array) inside the store.
    level : int
        Pyramid level to read (HDF5 BigDataViewer, OME-Zarr, the scale index of a precomputed volume);
        0 is full resolution.
    override : bool
        Let ``voxel_size`` / ``orientation`` replace what the file records.
    allow_nonfinite : bool
        Keep NaN/inf values in float data instead of raising.

    Returns
    -------
    Volume
        HDF5, OME-Zarr, precomputed and TIFF slice folders hold a lazy dask array
        (``vol.data``); slicing it reads only the blocks needed, and
        ``vol.numpy()`` loads it. Lazy float data larger than 64 MiB is checked
        for NaN/inf block by block as it is computed.

    Raises
    ------
    InputError
        Missing, truncated or corrupt file; unknown suffix; non-3-D or
        complex/object data; NaN/inf values; missing, non-positive or
        contradicting voxel size; self-contradicting geometry.

    Examples
    --------
    >>> vol = read_volume("brain_psl_50x40x40um.tif", voxel_size=(50, 40, 40), orientation="psl",
    ...                   space="sample")                                    # doctest: +SKIP
    >>> vol.index_to_physical([[10, 0, 5]])                                 # doctest: +SKIP
    array([[500.,   0., 200.]])
    """
    from .precomputed import precomputed_source

    src = precomputed_source(path)
    p = Path(src.display) if src is not None else Path(path).expanduser()
    if src is None:
        check_exists(p)
    fmt = "precomputed" if src is not None else volume_format(p)
    vs = None if voxel_size is None else as_voxel_size(voxel_size, path=p)
    orient = None if orientation is None else _arg(validate_orientation, orientation, p)
    if unit is not None:
        unit = _arg(normalize_unit, unit, p)
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise InputError(f"level must be a non-negative integer, got {level!r}", path=p, field="level")
    level = int(level)
    if dataset is not None and fmt not in ("hdf5", "ome-zarr"):
        raise InputError(f"dataset= only applies to HDF5 and OME-Zarr, not {fmt}", path=p, field="dataset")
    if level and fmt not in ("hdf5", "ome-zarr", "precomputed"):
        raise InputError(f"a {fmt} file has a single resolution level; level={level} does not exist", path=p,
                         field="level")
    if fmt in ("nifti", "nrrd"):
        raw = _read_sitk(p, fmt, allow_nonfinite)
    elif fmt == "tiff":
        from .tiff import read_tiff_file

        raw = read_tiff_file(p, allow_nonfinite)
    elif fmt == "tiff-folder":
        from .tiff import read_tiff_folder

        raw = read_tiff_folder(p, allow_nonfinite)
    elif fmt == "hdf5":
        from .hdf5 import read_hdf5

        if p.is_dir():
            raise InputError("an HDF5 file is expected but this is a folder", path=p)
        raw = read_hdf5(p, dataset, level, allow_nonfinite)
    elif fmt == "precomputed":
        from .precomputed import read_precomputed

        if src is None:
            raise InputError("is named as a neuroglancer precomputed folder but is not one (a precomputed volume "
                             "is a folder whose 'info' file has 'scales')", path=p)
        raw = read_precomputed(src, level, allow_nonfinite)
        p = src.display
    else:
        from .ome_zarr import read_ome_zarr

        if not p.is_dir():
            raise InputError("a Zarr store is a folder but this is a file (zipped stores are not supported: "
                             "unzip it)", path=p)
        raw = read_ome_zarr(p, dataset, level, allow_nonfinite)
    return _place(raw, p, vs, orient, space, unit, override)


def _arg(check, value, path):
    try:
        return check(value)
    except InputError as exc:
        raise InputError(str(exc), path=path) from None


def _place(raw: RawVolume, path: Path, voxel_size, orientation, space, unit, override: bool) -> Volume:
    """Apply the geometry rules (CONVENTIONS) to what a reader found."""
    if isinstance(space, Space):
        if unit is not None and unit != space.unit:
            raise InputError(f"space {space.name!r} is in {space.unit} but unit={unit!r} was given", path=path,
                             field="unit")
        name, target_unit = space.name, space.unit
        if orientation is not None and space.orientation is not None and orientation != space.orientation:
            raise InputError(f"orientation {orientation!r} contradicts space {space.name!r}'s "
                             f"{space.orientation!r}", path=path, field="orientation")
        orientation = orientation or space.orientation
    else:
        if space is not None and (not isinstance(space, str) or not space):
            raise InputError(f"space must be a name or a Space, got {space!r}", path=path, field="space")
        name = space if space is not None else (raw.space_name or "unnamed")
        target_unit = unit or raw.recorded_unit or "um"
    if raw.spacing is None:
        if voxel_size is None:
            raise InputError(raw.no_geometry_hint or "the file records no voxel size; pass voxel_size=", path=path,
                             field="voxel_size")
        spacing = voxel_size * raw.factor
        origin = (raw.factor - 1) / 2 * voxel_size
        direction = np.eye(3)
    else:
        f = 1.0 if raw.file_unit is None else unit_scale(raw.file_unit, target_unit)
        spacing = np.asarray(raw.spacing, np.float64) * f
        origin = np.asarray(raw.origin, np.float64) * f
        direction = raw.direction
        spacing0 = np.asarray(raw.spacing0 if raw.spacing0 is not None else raw.spacing, np.float64) * f
        as_voxel_size(spacing0, path=path, field="voxel_size (in the file)")
        if voxel_size is not None and not np.allclose(voxel_size, spacing0, rtol=1e-4, atol=0):
            if not override:
                raise InputError(
                    f"voxel_size={tuple(voxel_size.tolist())} contradicts the file's "
                    f"{tuple(np.round(spacing0, 9).tolist())} {target_unit}; omit voxel_size to use the file's, "
                    "or pass override=True to replace it", path=path, field="voxel_size")
            spacing = spacing * (voxel_size / spacing0)
    spacing = as_voxel_size(spacing, path=path, field="voxel_size (in the file)")
    if not np.all(np.isfinite(origin)):
        raise InputError(f"origin {np.asarray(origin).tolist()} is not finite", path=path, field="origin")
    direction = check_direction(direction, path)
    recorded = raw.orientation
    if recorded is not None:
        try:
            recorded = validate_orientation(recorded)
        except InputError:
            recorded = None  # damaged metadata: the caller's code (if any) decides
    if orientation is not None and recorded is not None and orientation != recorded and not override:
        raise InputError(f"orientation {orientation!r} contradicts the {recorded!r} the file records; omit it, or "
                         "pass override=True", path=path, field="orientation")
    final_orientation = orientation or recorded
    try:
        sp = Space(str(name), target_unit, final_orientation)
        return Volume(raw.data, spacing, origin, direction, sp)
    except InputError as exc:
        raise InputError(str(exc), path=path) from None


def _read_sitk(path: Path, fmt: str, allow_nonfinite: bool) -> RawVolume:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO(_SITK_IO[fmt])  # never let ITK guess: a TIFF named .nii must fail, not load
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except Exception as exc:  # noqa: BLE001 - ITK raises RuntimeError with its own message
        raise wrap_read_error(exc, path) from exc
    dim, ncomp = reader.GetDimension(), reader.GetNumberOfComponents()
    size = tuple(reader.GetSize())
    complex_ids = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}
    if reader.GetPixelID() in complex_ids:
        raise InputError("holds complex values; volumes must be real. Save the magnitude first", path=path,
                         field="dtype")
    if ncomp != 1:
        raise InputError(f"has {ncomp} components per voxel (RGB/vector image); a volume needs one. Extract a "
                         "channel first", path=path, field="dtype")
    if dim == 4 and size[3] == 1:
        pass  # a 3-D image saved with a time axis of length 1
    elif dim != 3:
        raise InputError(f"is {dim}-D (size {size}); a volume must be 3-D", path=path, field="shape")
    try:
        img = reader.Execute()
        if dim == 4:
            img = img[:, :, :, 0]
        arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise wrap_read_error(exc, path) from exc
    check_shape(arr.shape, path)
    check_dtype(arr.dtype, path)
    if fmt == "nifti":
        arr = _nifti_verify(path, arr)
    elif path.name.lower().endswith(".nrrd"):
        _nrrd_verify(path, arr)
    if not allow_nonfinite:
        n = count_nonfinite(arr)
        if n:
            raise nonfinite_error(n, arr.size, path)
    raw = RawVolume(arr, spacing=np.asarray(img.GetSpacing(), np.float64),
                    origin=np.asarray(img.GetOrigin(), np.float64),
                    direction=np.asarray(img.GetDirection(), np.float64).reshape(3, 3), file_unit="mm")
    raw.spacing0 = raw.spacing
    notes = _parse_notes(reader)
    raw.space_name, raw.orientation = notes.get("space") or None, notes.get("orientation") or None
    if notes.get("unit"):
        try:
            raw.recorded_unit = normalize_unit(notes["unit"])
        except InputError:
            pass
    return raw


def _nifti_verify(path: Path, arr: np.ndarray) -> np.ndarray:
    """Catch what ITK's NIfTI reader hides: truncated data (it pads with zeros) and NaN/inf (it reads 0).

    nibabel reads the same voxels in the same (i, j, k) order and raises on
    short data. An uncompressed file is checked by its size; a compressed one
    (or float data, whose NaN/inf must be put back) is decompressed again.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        proxy = img.dataobj
        nbytes = int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
        offset = int(proxy.offset)
        gz = path.name.lower().endswith(".gz")
        if not gz and path.stat().st_size < offset + nbytes:
            raise InputError(f"the file is truncated: its header promises {nbytes} bytes of voxels after byte "
                             f"{offset} but the file has {path.stat().st_size} bytes in all; copy or export it "
                             "again", path=path)
        if gz:
            _check_gzip(path, 0, offset + nbytes)
        if arr.dtype.kind != "f":
            return arr
        raw = np.asanyarray(img.dataobj)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel/gzip raise many types on short or damaged data
        raise InputError(f"the voxel data is incomplete or damaged ({type(exc).__name__}: "
                         f"{str(exc)[:200]}); copy or export it again", path=path) from exc
    if raw.size != arr.size:
        raise InputError(f"the file holds {raw.size} voxels but its header says {arr.size}", path=path)
    if arr.dtype.kind == "f":
        raw = raw.reshape(arr.shape)
        bad = ~np.isfinite(raw)
        if bad.any():
            arr = np.array(arr, copy=True)
            arr[bad] = raw[bad]
    return arr


def _check_gzip(path: Path, start: int, size: int, exact: bool = False, data=None) -> None:
    """Check that the gzip stream from byte ``start`` to the end of the file is complete and decompresses
    to ``size`` bytes (at least, or exactly if ``exact``). ITK's readers do not: they zero-pad a cut
    stream, skip the trailer, and (NRRD) ignore the CRC.

    Fast path: the trailer's length field (ISIZE, the size modulo 2**32) matches ``size`` and, if the
    decompressed bytes are given as ``data``, its CRC32 matches theirs. Otherwise the stream is
    decompressed (streaming, bounded memory) and zlib checks CRC and length.
    """
    import zlib

    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() - start >= 18:
            fh.seek(-8, 2)
            trailer = fh.read(8)
            crc, isize = int.from_bytes(trailer[:4], "little"), int.from_bytes(trailer[4:], "little")
            if isize == size % 2**32 and (data is None or zlib.crc32(data) == crc):
                return
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            while not d.eof:
                block = fh.read(1 << 20)
                if not block:
                    break
                total += len(d.decompress(block))
    except zlib.error as exc:
        raise InputError(f"the compressed data is damaged ({exc}); copy or export it again", path=path) from exc
    if not d.eof:
        raise InputError("the compressed data ends early: the file is truncated; copy or export it again", path=path)
    if total < size or (exact and total != size):
        raise InputError(f"the data decompresses to {total} bytes but the header describes {size}; the file is "
                         "damaged", path=path)


def _nrrd_verify(path: Path, arr: np.ndarray) -> None:
    """NRRD: a gzip-encoded attached data block must be complete and intact (ITK checks neither)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    end = head.find(b"\n\n")
    if end < 0:
        return  # ITK already parsed it; an odd layout (e.g. \r\n) is left to ITK
    header = head[:end].decode("latin-1").lower()
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in header.splitlines()
                                                 if ":" in line and ":=" not in line)}
    if fields.get("encoding") in ("gzip", "gz") and "data file" not in fields and "datafile" not in fields:
        # ITK's buffer is the file's voxel order; its bytes are the file's if the file is little-endian.
        file_order = np.ascontiguousarray(arr.transpose(2, 1, 0))
        same_bytes = fields.get("endian", "little") == "little" or arr.dtype.itemsize == 1
        _check_gzip(path, end + 2, arr.nbytes, exact=True,
                    data=memoryview(file_order).cast("B") if same_bytes else None)


def _parse_notes(reader) -> dict:
    """The ``{"atlasreg": 1, ...}`` note atlasreg writes into NIfTI ``descrip`` / NRRD ``ITK_FileNotes``."""
    try:
        if not reader.HasMetaDataKey("ITK_FileNotes"):
            return {}
        d = json.loads(reader.GetMetaData("ITK_FileNotes"))
    except (ValueError, RuntimeError):
        return {}
    return {k: str(v) for k, v in d.items() if isinstance(v, str)} if isinstance(d, dict) and d.get("atlasreg") \
        else {}


# -- writing --------------------------------------------------------------------------------------------------

def write_volume(vol: Volume, path: str | os.PathLike, force: bool = False, chunks=None, *,
                 dataset: str = "volume", levels: int | None = None, ngff_version: str = "0.4",
                 downsample: str = "mean") -> Path:
    """Write a volume; the format follows the suffix. Returns the path written.

    Parameters
    ----------
    vol : Volume
    path : str or Path
        ``.nii``/``.nii.gz``/``.nrrd`` (geometry in mm, LPS, as SimpleITK
        writes it; space name, unit and orientation go in the header notes),
        ``.tif``/``.tiff`` (deflate-compressed stack; geometry in its JSON
        description, which only atlasreg reads), ``.h5``/``.hdf5`` (one
        chunked gzip dataset with geometry attributes, see
        :mod:`atlasreg.io.hdf5`), ``.ome.zarr``/``.zarr`` (OME-NGFF pyramid,
        see :mod:`atlasreg.io.ome_zarr`), ``.precomputed`` or ``precomputed://file:///...`` (a neuroglancer
        precomputed folder, see :func:`atlasreg.io.precomputed.write_precomputed`; ``downsample="nearest"``
        makes it a segmentation).
        Every format keeps the data type, except that NIfTI/NRRD store bool as
        uint8 and float16 as float32 (ITK has neither), values unchanged.
    force : bool
        Overwrite an existing output. Without it an existing output raises
        :class:`~atlasreg.errors.OutputExistsError` before anything is computed.
    chunks : int or 3 ints, optional
        Chunk shape for HDF5 (default 64) and OME-Zarr (default 128), clipped to the volume.
    dataset : str
        HDF5 dataset name.
    levels : int, optional
        OME-Zarr: number of pyramid levels (default: until every axis is at most 64 voxels).
    ngff_version : {"0.4", "0.5"}
        OME-Zarr: NGFF 0.4 on Zarr v2 (default; read by most viewers today) or 0.5 on Zarr v3.
    downsample : {"mean", "nearest"}
        OME-Zarr pyramid: block mean (images) or every other voxel (label volumes).

    Examples
    --------
    >>> write_volume(vol, "brain.ome.zarr")                                  # doctest: +SKIP
    PosixPath('brain.ome.zarr')
    """
    if not isinstance(vol, Volume):
        raise InputError(f"write_volume needs a Volume, got {type(vol).__name__}; wrap arrays with "
                         "atlasreg.Volume(data, voxel_size=...)", field="vol")
    if volume_format(path if isinstance(path, str) else Path(path), reading=False) == "precomputed":
        from .precomputed import write_precomputed

        check_shape(vol.shape, path, "the volume")
        check_dtype(vol.dtype, path, "the volume")
        if downsample not in ("mean", "nearest"):
            raise InputError(f"downsample must be 'mean' or 'nearest', got {downsample!r}", path=path,
                             field="downsample")
        return write_precomputed(vol, path, force, chunks=64 if chunks is None else chunks,
                                 levels=32 if levels is None else levels, segmentation=downsample == "nearest")
    p = Path(path).expanduser()
    fmt = volume_format(p, reading=False)
    check_shape(vol.shape, p, "the volume")
    dtype = check_dtype(vol.dtype, p, "the volume")
    check_writable(p, force)
    chunk_shape = _chunks(chunks, fmt, vol.shape, p)
    geometry = {"voxel_size": [float(v) for v in vol.voxel_size], "origin": [float(v) for v in vol.origin],
                "direction": np.asarray(vol.direction, float).tolist(), "unit": vol.unit,
                "space": vol.space.name, "orientation": vol.orientation}
    if fmt in ("nifti", "nrrd"):
        suffix = ".nii.gz" if p.name.lower().endswith(".nii.gz") else p.suffix.lower()
        with atomic_path(p, force, suffix=suffix) as tmp:
            _write_sitk(vol, tmp, fmt, dtype, geometry, p)
    elif fmt == "tiff":
        from .tiff import write_tiff

        with atomic_path(p, force, suffix=".tif") as tmp:
            write_tiff(vol, tmp, geometry)
    elif fmt == "hdf5":
        from .hdf5 import write_hdf5

        if not isinstance(dataset, str) or not dataset.strip("/"):
            raise InputError(f"dataset must be a non-empty name, got {dataset!r}", path=p, field="dataset")
        with atomic_path(p, force) as tmp:
            write_hdf5(vol, tmp, dataset, chunk_shape, geometry)
    else:
        from .ome_zarr import NGFF_VERSIONS, write_ome_zarr

        if str(ngff_version) not in NGFF_VERSIONS:
            raise InputError(f"ngff_version must be one of {NGFF_VERSIONS}, got {ngff_version!r}", path=p,
                             field="ngff_version")
        if downsample not in ("mean", "nearest"):
            raise InputError(f"downsample must be 'mean' or 'nearest', got {downsample!r}", path=p,
                             field="downsample")
        if levels is not None and (isinstance(levels, bool) or not isinstance(levels, (int, np.integer))
                                   or levels < 1):
            raise InputError(f"levels must be a positive integer, got {levels!r}", path=p, field="levels")
        if not np.allclose(vol.direction, np.eye(3), atol=1e-9):
            raise InputError("OME-NGFF 0.4/0.5 stores only scale and translation, but this volume's direction is "
                             f"not the identity ({np.round(vol.direction, 6).tolist()}); write .nii.gz/.nrrd/.h5, "
                             "or resample onto an axis-aligned grid first", path=p, field="direction")
        with atomic_path(p, force) as tmp:
            write_ome_zarr(vol, tmp, chunk_shape, geometry, levels, str(ngff_version), downsample)
    return p


def _chunks(chunks, fmt: str, shape, path) -> tuple:
    if chunks is None:
        chunks = DEFAULT_CHUNKS.get(fmt, 64)
    try:
        c = np.broadcast_to(np.asarray(chunks, dtype=np.int64), (3,))
    except (TypeError, ValueError):
        raise InputError(f"chunks must be one or three positive integers, got {chunks!r}", path=path,
                         field="chunks") from None
    if np.any(c < 1):
        raise InputError(f"chunks must be positive, got {chunks!r}", path=path, field="chunks")
    return tuple(int(min(a, n)) for a, n in zip(c, shape))


def _notes(geometry: dict) -> str:
    """Header note for NIfTI (``descrip``, 80 bytes) / NRRD: space name dropped first if too long."""
    d = {"atlasreg": 1, "unit": geometry["unit"]}
    if geometry.get("orientation"):
        d["orientation"] = geometry["orientation"]
    full = json.dumps({**d, "space": geometry["space"]}, separators=(",", ":"), ensure_ascii=True)
    return full if len(full) <= 79 else json.dumps(d, separators=(",", ":"))


def _write_sitk(vol: Volume, tmp: Path, fmt: str, dtype: np.dtype, geometry: dict, final: Path) -> None:
    import SimpleITK as sitk

    mm = vol.in_unit("mm")  # NIfTI/NRRD positions are millimetres (CONVENTIONS)
    if dtype == np.float16:
        mm = mm.with_data(mm.numpy().astype(np.float32))  # ITK has no half floats; float32 holds them exactly
    img = mm.to_sitk()
    img.SetMetaData("ITK_FileNotes", _notes(geometry))
    w = sitk.ImageFileWriter()
    w.SetImageIO(_SITK_IO[fmt])
    w.SetFileName(str(tmp))
    w.SetUseCompression(fmt == "nrrd" or final.name.lower().endswith(".gz"))
    try:
        w.Execute(img)
    except RuntimeError as exc:
        raise InputError(f"SimpleITK could not write it ({str(exc).strip().splitlines()[-1][:200]})",
                         path=final) from exc
