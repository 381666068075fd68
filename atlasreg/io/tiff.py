"""TIFF volumes: one multi-page file, or a folder of 2-D slices (tifffile).

A TIFF carries no geometry: the caller gives the voxel size, the array is used
as read (axis 0 = page / slice number) with origin 0 and identity direction
(CONVENTIONS). Files written by atlasreg also record their geometry in the
JSON image description (``{"shape": ..., "atlasreg": {...}}``, tifffile's
"shaped" metadata) so they read back without a voxel size; other programs
ignore it.
"""
from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import InputError
from ._checks import (RawVolume, check_dtype, check_shape, count_nonfinite, nonfinite_error,
                      open_lazy, wrap_read_error)

TIFF_SUFFIXES = (".tif", ".tiff")
GEOMETRY_KEY = "atlasreg"

_NO_GEOMETRY_HINT = (
    "a TIFF stack records no voxel size; pass voxel_size=(axis0, axis1, axis2) in the space's unit "
    "(e.g. voxel_size=(50, 40, 40) for 50 µm between pages and 40 µm in-plane). Light-sheet voxels are "
    "usually anisotropic, so give all three")


_DAMAGE = re.compile(r"invalid|incorrect|corrupt|truncat|failed|cannot|not a|suspicious", re.I)


class _LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if record.levelno >= logging.ERROR or _DAMAGE.search(msg):
            self.messages.append(msg)


@contextmanager
def _tifffile_errors():
    """Collect what tifffile logs about damage: it reports broken page chains, wrong strip counts and
    failed reshapes there and then returns a partial or garbled array instead of raising."""
    logger = logging.getLogger("tifffile")
    h = _LogCapture()
    logger.addHandler(h)
    try:
        yield h.messages
    finally:
        logger.removeHandler(h)


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_slices(folder: Path) -> list[Path]:
    """The TIFF files of a folder, sorted naturally (``z2.tif`` before ``z10.tif``); hidden files skipped."""
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in TIFF_SUFFIXES]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _check_structure(path: Path, indices=None) -> None:
    """A damaged file can still parse. Check, page by page (full headers, not tifffile's shortcut of
    reusing page 0's): every page of the stack has the same shape and pixel type, all its strips/tiles
    are listed, and they lie inside the file."""
    import tifffile

    size = path.stat().st_size
    ref = None
    with tifffile.TiffFile(path) as tf:
        tf.pages.useframes = False
        for i in (range(len(tf.pages)) if indices is None else indices):
            page = tf.pages[i]
            key = (tuple(page.shape), str(page.dtype), int(page.compression), page.bitspersample,
                   int(page.sampleformat), int(page.planarconfig))
            if ref is None:
                ref = (i, key)
            elif key != ref[1]:
                raise InputError(f"page {i} has shape {key[0]} {key[1]} (compression {key[2]}) but page {ref[0]} "
                                 f"has {ref[1][0]} {ref[1][1]} (compression {ref[1][2]}): a page header is "
                                 "damaged; export the stack again", path=path)
            offs, counts = page.dataoffsets, page.databytecounts
            chunked = getattr(page, "chunked", None)
            if chunked is not None and len(offs) and int(np.prod(chunked)) != len(offs):
                raise InputError(f"page {i} should have {int(np.prod(chunked))} strips/tiles but lists {len(offs)}: "
                                 "the header is damaged; export the stack again", path=path)
            for o, c in zip(offs, counts):
                if o + c > size:
                    raise InputError(f"page {i} needs bytes up to {o + c} but the file has {size}: it is "
                                     "truncated; copy or export it again", path=path)


def read_tiff_file(path: Path, allow_nonfinite: bool) -> RawVolume:
    import tifffile

    try:
        with _tifffile_errors() as errors, tifffile.TiffFile(path) as tf:
            if not tf.series:
                raise InputError("the TIFF holds no image: it is empty or its header is damaged", path=path)
            series = tf.series[0]
            _check_structure(path, [p.index for p in series.pages if p is not None])
            check_dtype(series.dtype, path)
            meta = tf.shaped_metadata[0] if tf.is_shaped and tf.shaped_metadata else {}
            arr = series.asarray()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any tifffile/decoder failure means a bad file
        raise wrap_read_error(exc, path) from exc
    if errors:
        raise InputError(f"the TIFF is damaged ({errors[0][:200]}); it may be truncated. Re-export it", path=path)
    shape_meta = meta.get("shape") if isinstance(meta, dict) else None
    if shape_meta is not None and tuple(shape_meta) != arr.shape and int(np.prod(shape_meta)) != arr.size:
        raise InputError(f"the TIFF says it holds shape {tuple(shape_meta)} but only {arr.shape} could be read; "
                         "it is truncated or damaged", path=path)
    if arr.ndim > 3:
        # ImageJ hyperstacks store single channels/time points as axes of length 1.
        arr = arr.reshape([s for s in arr.shape if s != 1] or [1])
    check_shape(arr.shape, path, "the TIFF image")
    if not allow_nonfinite:
        n = count_nonfinite(arr)
        if n:
            raise nonfinite_error(n, arr.size, path)
    raw = RawVolume(arr, no_geometry_hint=_NO_GEOMETRY_HINT)
    geo = meta.get(GEOMETRY_KEY) if isinstance(meta, dict) else None
    if isinstance(geo, dict):
        _apply_recorded_geometry(raw, geo, path)
    return raw


def _apply_recorded_geometry(raw: RawVolume, geo: dict, path: Path) -> None:
    try:
        raw.spacing = np.asarray(geo["voxel_size"], dtype=np.float64).reshape(3)
        raw.origin = np.asarray(geo.get("origin", (0, 0, 0)), dtype=np.float64).reshape(3)
        raw.direction = np.asarray(geo.get("direction", np.eye(3)), dtype=np.float64).reshape(3, 3)
        raw.file_unit = str(geo["unit"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"the atlasreg geometry in the TIFF description is damaged ({exc})", path=path) from exc
    raw.spacing0 = raw.spacing
    raw.recorded_unit = raw.file_unit
    raw.space_name = geo.get("space") or None
    raw.orientation = geo.get("orientation") or None


class _SliceFolder:
    """Numpy-style slicing over a folder of equally shaped 2-D TIFF slices (axis 0 = file number)."""

    def __init__(self, files, shape, dtype):
        self.files, self.shape, self.dtype = list(files), tuple(shape), np.dtype(dtype)

    def __getitem__(self, idx):
        import tifffile

        idx = idx if isinstance(idx, tuple) else (idx,)
        first, rest = idx[0], idx[1:]
        picks = range(self.shape[0])[first]
        single = isinstance(picks, int)
        picks = [picks] if single else list(picks)
        out = np.empty((len(picks),) + self.shape[1:], self.dtype)
        for k, i in enumerate(picks):
            with _tifffile_errors() as errors:
                img = tifffile.imread(self.files[i])
            if errors:
                raise InputError(f"slice is damaged ({errors[0][:200]})", path=self.files[i])
            img = np.squeeze(img)
            if img.shape != self.shape[1:] or img.dtype != self.dtype:
                raise InputError(f"slice has shape {img.shape} {img.dtype}, the first slice "
                                 f"{self.shape[1:]} {self.dtype}; all slices must match", path=self.files[i])
            out[k] = img
        out = out[(slice(None),) + rest]
        return out[0] if single else out


def read_tiff_folder(folder: Path, allow_nonfinite: bool) -> RawVolume:
    """A folder of 2-D TIFF slices, opened lazily (one dask chunk per slice)."""
    import tifffile

    files = list_slices(folder)
    if not files:
        raise InputError("the folder holds no .tif/.tiff slices (and is not a .zarr store)", path=folder)
    shape2d = dtype = None
    for f in files:  # headers only: cheap, and catches a bad slice before any computation
        try:
            with _tifffile_errors() as errors, tifffile.TiffFile(f) as tf:
                _check_structure(f)
                s = tf.series[0] if tf.series else None
                if s is None:
                    raise InputError("the slice holds no image", path=f)
                shp = tuple(d for d in s.shape if d != 1) if len(s.shape) > 2 else tuple(s.shape)
                dt = s.dtype
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise wrap_read_error(exc, f) from exc
        if errors:
            raise InputError(f"the slice is damaged ({errors[0][:200]})", path=f)
        if len(shp) != 2:
            raise InputError(f"slice has shape {tuple(s.shape)}; a slice folder needs one 2-D image per file",
                             path=f, field="shape")
        if shape2d is None:
            shape2d, dtype = shp, check_dtype(dt, f)
        elif shp != shape2d or dt != dtype:
            raise InputError(f"slice has shape {shp} {dt} but {files[0].name} has {shape2d} {dtype}; all "
                             "slices must match", path=f, field="shape")
    shape = (len(files),) + shape2d
    check_shape(shape, folder, "the slice stack")
    data = open_lazy(folder, lambda: _SliceFolder(files, shape, dtype), shape, dtype,
                     chunks=(1,) + shape2d, allow_nonfinite=allow_nonfinite,
                     token="|".join(f.name for f in files), dask_chunks=(1,) + shape2d)
    return RawVolume(data, no_geometry_hint=_NO_GEOMETRY_HINT)


def write_tiff(vol, tmp: Path, geometry: dict) -> None:
    """One multi-page TIFF (BigTIFF when large), deflate-compressed, streamed page by page from dask."""
    import tifffile

    data = vol.data
    dtype = np.dtype(data.dtype)
    # Deflate level 1 with horizontal differencing for integers: 3x faster than the default level and
    # smaller files; every TIFF reader decodes both.
    kw = dict(shape=tuple(data.shape), dtype=dtype, photometric="minisblack", compression="zlib",
              compressionargs={"level": 1}, predictor=dtype.kind in "iu" and dtype.itemsize <= 4, metadata={GEOMETRY_KEY: geometry})
    if hasattr(data, "compute"):
        def pages():
            step = max(1, int(data.chunksize[0]))
            for s in range(0, data.shape[0], step):
                slab = np.asarray(data[s:s + step].compute())
                yield from slab
        tifffile.imwrite(tmp, pages(), **kw)
    else:
        tifffile.imwrite(tmp, np.asarray(data), **{k: v for k, v in kw.items() if k not in ("shape", "dtype")})
