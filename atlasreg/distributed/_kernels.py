"""Serial numba kernels for one output block (dask threads supply the parallelism).

The core kernels in :mod:`atlasreg._kernels` are parallel over points; inside a
block task several of them run at once on different threads, so these helpers
are plain loops that release the GIL.
"""
from __future__ import annotations

import numba as nb
import numpy as np

_SER = dict(cache=True, nogil=True, fastmath=False)

#: Continuous index given to points that must take the fill value.
OUTSIDE = -1e9


@nb.njit(**_SER)
def index_affine(start, shape, m, out):
    """``out[n] = m @ (i, j, k, 1)`` for the voxels of the block ``start + [0, shape)`` in C order."""
    nx, ny, nz = shape[0], shape[1], shape[2]
    n = 0
    for a in range(nx):
        i = float(start[0] + a)
        for b in range(ny):
            j = float(start[1] + b)
            bx = m[0, 0] * i + m[0, 1] * j + m[0, 3]
            by = m[1, 0] * i + m[1, 1] * j + m[1, 3]
            bz = m[2, 0] * i + m[2, 1] * j + m[2, 3]
            for c in range(nz):
                k = float(start[2] + c)
                out[n, 0] = bx + m[0, 2] * k
                out[n, 1] = by + m[1, 2] * k
                out[n, 2] = bz + m[2, 2] * k
                n += 1


@nb.njit(**_SER)
def apply_affine(pts, m, out):
    """``out = pts @ m[:3, :3].T + m[:3, 3]`` (``out`` may be ``pts``)."""
    for k in range(pts.shape[0]):
        x = pts[k, 0]
        y = pts[k, 1]
        z = pts[k, 2]
        out[k, 0] = m[0, 0] * x + m[0, 1] * y + m[0, 2] * z + m[0, 3]
        out[k, 1] = m[1, 0] * x + m[1, 1] * y + m[1, 2] * z + m[1, 3]
        out[k, 2] = m[2, 0] * x + m[2, 1] * y + m[2, 2] * z + m[2, 3]


@nb.njit(**_SER)
def finite_bounds(cidx):
    """Per-axis min and max over rows without NaN; ``count`` of such rows."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    count = 0
    for k in range(cidx.shape[0]):
        x = cidx[k, 0]
        y = cidx[k, 1]
        z = cidx[k, 2]
        if np.isfinite(x) and np.isfinite(y) and np.isfinite(z):
            count += 1
            if x < lo[0]:
                lo[0] = x
            if x > hi[0]:
                hi[0] = x
            if y < lo[1]:
                lo[1] = y
            if y > hi[1]:
                hi[1] = y
            if z < lo[2]:
                lo[2] = z
            if z > hi[2]:
                hi[2] = z
    return lo, hi, count


@nb.njit(**_SER)
def localize(cidx, lo, full, nearest, out):
    """Continuous indices of the whole source -> indices into the box starting at ``lo``.

    Points outside the whole source (or NaN) get :data:`OUTSIDE`, so the box's
    own edges never act as volume edges. For nearest-neighbour sampling the
    rounding happens here, on the whole-volume index, so a box gives exactly
    the voxel the in-memory path picks.
    """
    for k in range(cidx.shape[0]):
        inside = True
        for a in range(3):
            c = cidx[k, a]
            if not np.isfinite(c):
                inside = False
            elif nearest:
                if not (c >= -0.5 and c < full[a] - 0.5):
                    inside = False
            elif not (c >= -0.5 and c <= full[a] - 0.5):
                inside = False
        if not inside:
            out[k, 0] = OUTSIDE
            out[k, 1] = OUTSIDE
            out[k, 2] = OUTSIDE
            continue
        for a in range(3):
            c = cidx[k, a]
            if nearest:
                out[k, a] = np.floor(c + 0.5) - lo[a]
            else:
                out[k, a] = c - lo[a]
