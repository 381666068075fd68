"""Compact label volumes: a dense uint16 index into a small table of structure ids.

The Allen 25 µm annotation is 308 MB as uint32 (ids reach 614,454,277) but holds
only ~670 distinct ids; a uint16 index is 77 MB and is what the region lookups
sample. :class:`LabelArray` looks like the id array (shape, dtype, slicing,
``np.asarray``) while keeping only the index in memory.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .errors import InputError
from .parallel import njit_parallel


@njit_parallel()
def _remap_sorted(flat, table, out):
    # Binary search of each voxel's id in the sorted id table (every id is known to be present).
    n = flat.shape[0]
    m = table.shape[0]
    for k in nb.prange(n):
        v = flat[k]
        lo = 0
        hi = m - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if table[mid] < v:
                lo = mid + 1
            else:
                hi = mid
        out[k] = lo


def compact_labels(ids: np.ndarray, path=None) -> "LabelArray":
    """Turn an integer id volume into a :class:`LabelArray` (sorted id table + uint16 index).

    >>> la = compact_labels(np.array([[[0, 385], [385, 614454277]]], np.uint32))
    >>> la.table.tolist(), la.index.dtype.name
    ([0, 385, 614454277], 'uint16')
    """
    arr = np.asarray(ids)
    if arr.ndim != 3:
        raise InputError(f"an annotation volume is 3-D, got shape {arr.shape}", path=path, field="annotation")
    if arr.dtype.kind == "f":
        # Label volumes saved as float (some NIfTI tools do this): accept exact integers only.
        sample = arr[:: max(1, arr.shape[0] // 8)]
        if not np.all(np.isfinite(sample)) or not np.all(sample == np.round(sample)):
            raise InputError("annotation holds non-integer values; it is not a label volume", path=path,
                             field="annotation")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise InputError(f"annotation dtype {arr.dtype} is not an integer label type", path=path,
                         field="annotation")
    # Walk the voxels in memory order: a transposed view (e.g. SimpleITK's array read as x, y, z) is then
    # remapped without first being copied into C order.
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        arr = np.ascontiguousarray(arr)
    import pandas as pd  # its hash-based unique: np.unique would sort all the voxels

    flat = arr.ravel(order="K")
    table = np.sort(pd.unique(flat)).astype(np.int64)
    if table[0] < 0:
        raise InputError(f"annotation holds negative label ids {table[table < 0][:5].tolist()}", path=path,
                         field="annotation")
    if len(table) >= 65535:
        raise InputError(f"annotation holds {len(table)} distinct labels; more than a uint16 index can hold",
                         path=path, field="annotation")
    out = np.empty_like(arr, dtype=np.uint16, order="K")
    _remap_sorted(flat, table.astype(flat.dtype), out.ravel(order="K"))
    return LabelArray(out, table)


class LabelArray:
    """An id volume held as ``table[index]``: uint16 ``index``, int64 ``table`` of ids (sorted).

    Behaves like the id array for reading: ``shape``, ``ndim``, ``dtype``, ``np.asarray``
    (materialises the ids), integer/fancy indexing (returns ids) and slicing with plain
    slices or ``transpose`` (return another LabelArray sharing the table, no copy of ids).
    """

    def __init__(self, index: np.ndarray, table: np.ndarray):
        if index.dtype != np.uint16:
            raise InputError(f"label index must be uint16, got {index.dtype}")
        self.index = index
        self.table = np.asarray(table, dtype=np.int64)
        top = int(self.table.max()) if len(self.table) else 0
        self.dtype = np.dtype(np.uint16 if top < 2 ** 16 else np.uint32 if top < 2 ** 32 else np.int64)

    @property
    def shape(self) -> tuple:
        return self.index.shape

    @property
    def ndim(self) -> int:
        return self.index.ndim

    @property
    def nbytes(self) -> int:
        return self.index.nbytes + self.table.nbytes

    def __array__(self, dtype=None, copy=None):
        out = self.table.astype(self.dtype)[self.index]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key):
        keys = key if isinstance(key, tuple) else (key,)
        if all(isinstance(k, slice) for k in keys):
            return LabelArray(self.index[key], self.table)
        return self.table.astype(self.dtype)[self.index[key]]

    def transpose(self, *axes) -> "LabelArray":
        return LabelArray(self.index.transpose(*axes), self.table)

    def contiguous(self) -> "LabelArray":
        return LabelArray(np.ascontiguousarray(self.index), self.table)

    def __repr__(self) -> str:
        return f"LabelArray(shape={self.shape}, {len(self.table)} labels, {self.nbytes / 1e6:.0f} MB)"
