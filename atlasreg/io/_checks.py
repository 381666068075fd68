"""Checks shared by the volume readers and writers (issue 9: bad input fails early and clearly).

Also holds :class:`LazyArray`, the picklable array-like that HDF5 and Zarr
readers hand to dask: it reopens its file in whichever process computes a
block, and turns library errors and non-finite values inside a block into
:class:`~atlasreg.errors.InputError` naming the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError

# Float data up to this size is checked for NaN/inf when it is opened, even if
# lazy; larger lazy data is checked block by block as it is computed.
EAGER_FINITE_CHECK_BYTES = 64 * 2**20

SUPPORTED_KINDS = "buif"  # bool, unsigned, signed, float


@dataclass
class RawVolume:
    """What a format reader found, before atlasreg's geometry rules are applied.

    Lengths are in ``file_unit`` (``None``: the file does not say; the numbers
    are then taken to be in the unit the caller asks for). ``spacing is None``
    means the file carries no geometry at all (TIFF, plain HDF5): the caller's
    ``voxel_size`` is required. ``factor`` is the downsampling of the level read
    relative to level 0, used to derive a level's geometry from a level-0 voxel
    size; ``spacing0`` is the level-0 spacing a given ``voxel_size`` is checked
    against.
    """

    data: Any
    spacing: np.ndarray | None = None
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    file_unit: str | None = None
    spacing0: np.ndarray | None = None
    factor: np.ndarray = field(default_factory=lambda: np.ones(3))
    space_name: str | None = None
    orientation: str | None = None
    recorded_unit: str | None = None  # unit of the space the file was written from (atlasreg files)
    no_geometry_hint: str = ""


def check_exists(path: Path) -> None:
    if not path.exists():
        parent = path.parent
        hint = "" if parent.exists() else f" (folder {parent} does not exist either)"
        raise InputError(f"no such file or folder{hint}; check the path", path=path)


def check_shape(shape, path, what: str = "data") -> None:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise InputError(
            f"{what} has {len(shape)} dimension(s) (shape {shape}); a volume must be 3-D. "
            "Extract one 3-D channel/time point first", path=path, field="shape")
    if min(shape) < 1:
        raise InputError(f"{what} has an empty axis (shape {shape})", path=path, field="shape")


def check_dtype(dtype, path, what: str = "data") -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind not in SUPPORTED_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise InputError(
            f"{what} has unsupported data type {dt} ({_kind_name(dt)}); volumes must be bool, integer or "
            "real floating point. Convert it (e.g. take the magnitude of complex data) first",
            path=path, field="dtype")
    return dt


def _kind_name(dt: np.dtype) -> str:
    return {"c": "complex", "O": "Python objects", "U": "text", "S": "bytes", "V": "raw/structured",
            "M": "dates", "m": "time spans"}.get(dt.kind, dt.kind)


def check_direction(direction, path) -> np.ndarray:
    d = np.asarray(direction, dtype=np.float64)
    if d.size != 9 or not np.all(np.isfinite(d)):
        raise InputError(f"direction must be a finite 3x3 matrix, got {direction!r}", path=path, field="direction")
    d = d.reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-5):
        raise InputError("direction matrix is not orthonormal (the geometry contradicts itself: axes must be "
                         f"unit length and perpendicular), got {d.tolist()}", path=path, field="direction")
    return d


def count_nonfinite(arr: np.ndarray, slab_bytes: int = 64 * 2**20) -> int:
    """Number of NaN/inf values in a numpy array, in slabs so memory stays bounded."""
    if arr.dtype.kind != "f":
        return 0
    n = 0
    per = max(1, slab_bytes // max(1, arr[0].nbytes)) if arr.ndim and arr.shape[0] else 1
    for s in range(0, arr.shape[0], per):
        blk = arr[s:s + per]
        n += int(blk.size - np.count_nonzero(np.isfinite(blk)))
    return n


def nonfinite_error(n: int, total: int, path, where: str = "") -> InputError:
    return InputError(
        f"{n} of {total} values{where} are NaN or infinite; fix or mask them, or pass allow_nonfinite=True "
        "to keep them", path=path, field="data")


def wrap_read_error(exc: BaseException, path, what: str = "read") -> InputError:
    """An InputError for a library exception raised while reading ``path``."""
    if isinstance(exc, InputError):
        return exc
    if isinstance(exc, MemoryError):
        msg = (f"could not {what} it: the file asks for more memory than is available (a corrupt header, or "
               "a volume to open lazily as HDF5/OME-Zarr)")
    else:
        detail = str(exc).strip().splitlines()
        detail = detail[0][:300] if detail else ""
        msg = (f"could not {what} it ({type(exc).__name__}: {detail}); the file is truncated, corrupt or not "
               "in the format its name says. Re-export or re-download it")
    return InputError(msg, path=path)


class LazyArray:
    """A picklable, read-only array-like over one array inside a file, for ``dask.array.from_array``.

    ``opener()`` returns an object with numpy-style slicing (an h5py dataset, a
    zarr array); it is called on first access in each process, so a dask
    graph built from this object also runs on dask.distributed workers.
    Errors while reading a block become InputError naming the file; float
    blocks are checked for NaN/inf unless ``allow_nonfinite``.
    """

    def __init__(self, path: Path, opener: Callable[[], Any], shape, dtype, chunks=None,
                 allow_nonfinite: bool = True, view_dtype=None):
        self.path = Path(path)
        self._opener = opener
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(view_dtype if view_dtype is not None else dtype)
        self._view = None if view_dtype is None else np.dtype(view_dtype)
        self.ndim = len(self.shape)
        self.chunks = None if chunks is None else tuple(int(c) for c in chunks)
        self.allow_nonfinite = allow_nonfinite
        self._arr = None
        self._pid = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_arr"] = None
        d["_pid"] = None
        return d

    def _source(self):
        if self._arr is None or self._pid != os.getpid():
            self._arr = self._opener()
            self._pid = os.getpid()
        return self._arr

    def __getitem__(self, idx):
        try:
            blk = np.asarray(self._source()[idx])
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any library failure is a bad file to the user
            raise wrap_read_error(exc, self.path, f"read block {idx} of") from exc
        if self._view is not None:
            blk = blk.view(self._view)
        if not self.allow_nonfinite and blk.dtype.kind == "f":
            n = int(blk.size - np.count_nonzero(np.isfinite(blk)))
            if n:
                raise nonfinite_error(n, blk.size, self.path, f" in block {idx}")
        return blk


def to_dask(src: LazyArray, chunks="auto", token: str = ""):
    """``dask.array.from_array`` over a LazyArray, named from the file so equal reads share a graph."""
    import dask.array as da
    from dask.base import tokenize

    try:
        st = src.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None
    name = "atlasreg-read-" + tokenize(str(src.path.resolve()), token, stamp, src.shape, str(src.dtype))
    return da.from_array(src, chunks=chunks, name=name, lock=False, asarray=False,
                         meta=np.empty((0,) * src.ndim, dtype=src.dtype))


def open_lazy(path: Path, opener: Callable[[], Any], shape, dtype, chunks=None, allow_nonfinite: bool = False,
              token: str = "", view_dtype=None, dask_chunks="auto"):
    """A dask array over one array in a file, validated as far as is cheap.

    Float data up to ``EAGER_FINITE_CHECK_BYTES`` is checked for NaN/inf now
    (the error gives the total count); larger data is checked block by block
    when computed, so opening a volume larger than memory stays instant.
    """
    dt = np.dtype(view_dtype if view_dtype is not None else dtype)
    nbytes = int(np.prod(shape, dtype=np.float64)) * dt.itemsize
    small = nbytes <= EAGER_FINITE_CHECK_BYTES
    src = LazyArray(path, opener, shape, dtype, chunks, allow_nonfinite=allow_nonfinite or small,
                    view_dtype=view_dtype)
    data = to_dask(src, chunks=dask_chunks, token=f"{token}|{allow_nonfinite or small}")
    if small and not allow_nonfinite and dt.kind == "f":
        import dask.array as da

        n = int(data.size - int(da.count_nonzero(da.isfinite(data)).compute()))
        if n:
            raise nonfinite_error(n, data.size, path)
    return data
