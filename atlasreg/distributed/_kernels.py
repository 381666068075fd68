"""Serial numba kernels for one output block (dask threads supply the parallelism).

The core kernels in :mod:`atlasreg._kernels` are parallel over points; inside a
block task several of them run at once on different threads, so these helpers
are plain loops that release the GIL.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .._kernels import trilinear

_SER = dict(cache=True, nogil=True, fastmath=False)


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
def sample_box(data, cidx, lo, full, nearest, fill, round_clip, vmin, vmax, out):
    """Sample ``data`` (the source box starting at index ``lo``) at whole-source continuous indices.

    Same numbers as :func:`atlasreg._kernels.sample_linear` / ``sample_nearest``
    on the whole source: bounds are checked against the whole source (``full``),
    nearest rounding happens on the whole-source index, and the box offset is
    subtracted exactly. With ``round_clip`` (integer output of linear
    sampling) values are rounded half to even and clipped to ``[vmin, vmax]``
    as :func:`atlasreg.volume.resample` does.
    """
    nx, ny, nz = data.shape[0], data.shape[1], data.shape[2]
    for k in range(cidx.shape[0]):
        cx = cidx[k, 0]
        cy = cidx[k, 1]
        cz = cidx[k, 2]
        if nearest:
            if not ((cx >= -0.5) and (cx < full[0] - 0.5) and (cy >= -0.5) and (cy < full[1] - 0.5)
                    and (cz >= -0.5) and (cz < full[2] - 0.5)):
                out[k] = fill
                continue
            ix = int(np.floor(cx + 0.5) - lo[0])
            iy = int(np.floor(cy + 0.5) - lo[1])
            iz = int(np.floor(cz + 0.5) - lo[2])
            out[k] = data[ix, iy, iz]
            continue
        if not ((cx >= -0.5) and (cx <= full[0] - 0.5) and (cy >= -0.5) and (cy <= full[1] - 0.5)
                and (cz >= -0.5) and (cz <= full[2] - 0.5)):
            out[k] = fill
            continue
        v = trilinear(data, cx - lo[0], cy - lo[1], cz - lo[2], nx, ny, nz)
        if round_clip:
            v = min(max(np.rint(v), vmin), vmax)
        out[k] = v
