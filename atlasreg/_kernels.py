"""Numba kernels for the hot loops over points and voxels.

Vectorised numpy manages a few million points per second through a trilinear
field lookup; these parallel kernels do an order of magnitude more, which is
what makes mapping hundreds of millions of points practical.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .parallel import njit_parallel

_PAR = dict(parallel=True, fastmath=False, cache=True, nogil=True)
# For the point-mapping kernel: let LLVM fuse multiply-adds and reorder sums (about 1e-14 relative
# change, ~15 % less time), but NOT assume values are finite: NaN points must stay NaN.
_PAR_FAST = dict(_PAR, fastmath={"contract", "reassoc", "nsz", "arcp"})


@nb.njit(inline="always")
def _apply(m, x, y, z):
    # a 3x4 affine matrix applied to one point
    return (m[0, 0] * x + m[0, 1] * y + m[0, 2] * z + m[0, 3],
            m[1, 0] * x + m[1, 1] * y + m[1, 2] * z + m[1, 3],
            m[2, 0] * x + m[2, 1] * y + m[2, 2] * z + m[2, 3])


@nb.njit(inline="always")
def _on_grid(cx, cy, cz, nx, ny, nz):
    # the field's domain: continuous index within [-0.5, n - 0.5] on every axis
    return (cx >= -0.5) and (cx <= nx - 0.5) and (cy >= -0.5) and (cy <= ny - 0.5) \
        and (cz >= -0.5) and (cz <= nz - 0.5)


@nb.njit(inline="always")
def _axis(c, n):
    # Clamp-to-edge neighbours along one axis: (i0, i1, fraction); a point in the outer half voxel
    # takes the edge value, as ITK's linear interpolator does.
    if c <= 0.0:
        return 0, 0, 0.0
    if c >= n - 1:
        return n - 1, n - 1, 0.0
    i = int(c)
    return i, i + 1, c - i


@nb.njit(inline="always")
def _trilinear_vec(field, cx, cy, cz, nx, ny, nz):
    # Trilinear interpolation of a (nx, ny, nz, 3) field at a continuous index already known to
    # lie within [-0.5, n - 0.5]. Straight-line code (no data-dependent branches) lets the CPU
    # issue all eight corner loads at once, which is what matters for a field larger than cache.
    x0, x1, fx = _axis(cx, nx)
    y0, y1, fy = _axis(cy, ny)
    z0, z1, fz = _axis(cz, nz)
    gx = 1.0 - fx
    gy = 1.0 - fy
    gz = 1.0 - fz
    w000 = gx * gy * gz
    w001 = gx * gy * fz
    w010 = gx * fy * gz
    w011 = gx * fy * fz
    w100 = fx * gy * gz
    w101 = fx * gy * fz
    w110 = fx * fy * gz
    w111 = fx * fy * fz
    r0 = (w000 * field[x0, y0, z0, 0] + w001 * field[x0, y0, z1, 0]
          + w010 * field[x0, y1, z0, 0] + w011 * field[x0, y1, z1, 0]
          + w100 * field[x1, y0, z0, 0] + w101 * field[x1, y0, z1, 0]
          + w110 * field[x1, y1, z0, 0] + w111 * field[x1, y1, z1, 0])
    r1 = (w000 * field[x0, y0, z0, 1] + w001 * field[x0, y0, z1, 1]
          + w010 * field[x0, y1, z0, 1] + w011 * field[x0, y1, z1, 1]
          + w100 * field[x1, y0, z0, 1] + w101 * field[x1, y0, z1, 1]
          + w110 * field[x1, y1, z0, 1] + w111 * field[x1, y1, z1, 1])
    r2 = (w000 * field[x0, y0, z0, 2] + w001 * field[x0, y0, z1, 2]
          + w010 * field[x0, y1, z0, 2] + w011 * field[x0, y1, z1, 2]
          + w100 * field[x1, y0, z0, 2] + w101 * field[x1, y0, z1, 2]
          + w110 * field[x1, y1, z0, 2] + w111 * field[x1, y1, z1, 2])
    return r0, r1, r2


@nb.njit(inline="always")
def _affine_field_affine_one(points, k, pre, field, to_index, post, outside_nan, out, nx, ny, nz):
    # One point of affine_field_affine: out[k] = post(q + u(q)), q = pre(points[k]).
    qx, qy, qz = _apply(pre, points[k, 0], points[k, 1], points[k, 2])
    cx, cy, cz = _apply(to_index, qx, qy, qz)
    if _on_grid(cx, cy, cz, nx, ny, nz):
        ux, uy, uz = _trilinear_vec(field, cx, cy, cz, nx, ny, nz)
    elif outside_nan:
        out[k, 0] = np.nan
        out[k, 1] = np.nan
        out[k, 2] = np.nan
        return
    else:
        ux = 0.0
        uy = 0.0
        uz = 0.0
    out[k, 0], out[k, 1], out[k, 2] = _apply(post, qx + ux, qy + uy, qz + uz)


@njit_parallel(**_PAR_FAST)
def affine_field_affine(points, pre, field, to_index, post, outside_nan, out):
    """out = post(q + u(q)) with q = pre(p); ``pre``/``post``/``to_index`` are 3x4 matrices.

    Points whose q lies outside the field's grid (continuous index outside
    [-0.5, n - 0.5]) get NaN when ``outside_nan`` else zero displacement.
    """
    nx, ny, nz = field.shape[0], field.shape[1], field.shape[2]
    for k in nb.prange(points.shape[0]):
        _affine_field_affine_one(points, k, pre, field, to_index, post, outside_nan, out, nx, ny, nz)


@njit_parallel(**_PAR)
def _block_keys(points, pre, to_index, nx, ny, nz, block, mult, off, keys):
    # Bucket of each point: the block (of block^3 voxels) its pre-mapped position falls in;
    # points off the grid go to bucket ``off`` (the last). ``mult`` numbers the blocks in the
    # field's memory order, so neighbouring buckets are neighbours in memory.
    n = points.shape[0]
    mx, my, mz = mult[0], mult[1], mult[2]
    for k in nb.prange(n):
        qx, qy, qz = _apply(pre, points[k, 0], points[k, 1], points[k, 2])
        cx, cy, cz = _apply(to_index, qx, qy, qz)
        if _on_grid(cx, cy, cz, nx, ny, nz):
            keys[k] = (min(max(int(cx), 0), nx - 1) // block * mx + min(max(int(cy), 0), ny - 1) // block * my
                       + min(max(int(cz), 0), nz - 1) // block * mz)
        else:
            keys[k] = off


@njit_parallel(**_PAR)
def _counting_order(keys, nkeys, parts, perm):
    # Stable counting sort, parallel: each of ``parts`` slices of the points counts its keys, the
    # slices' offsets are laid out bucket by bucket, then each slice places its points.
    n = keys.shape[0]
    parts = max(1, min(parts, n // 65536 + 1))
    size = (n + parts - 1) // parts
    counts = np.zeros((parts, nkeys), perm.dtype)
    for t in nb.prange(parts):
        for k in range(t * size, min(n, (t + 1) * size)):
            counts[t, keys[k]] += 1
    total = 0
    for b in range(nkeys):
        for t in range(parts):
            c = counts[t, b]
            counts[t, b] = total
            total += c
    for t in nb.prange(parts):
        for k in range(t * size, min(n, (t + 1) * size)):
            b = keys[k]
            perm[counts[t, b]] = k
            counts[t, b] += 1


@njit_parallel(**_PAR)
def _gather_rows(src, perm, dst):
    for j in nb.prange(perm.shape[0]):
        k = perm[j]
        dst[j, 0] = src[k, 0]
        dst[j, 1] = src[k, 1]
        dst[j, 2] = src[k, 2]


@njit_parallel(**_PAR)
def _scatter_rows(src, perm, dst):
    for j in nb.prange(perm.shape[0]):
        k = perm[j]
        dst[k, 0] = src[j, 0]
        dst[k, 1] = src[j, 1]
        dst[k, 2] = src[j, 2]


#: Fields larger than this many bytes (about a core's L2 cache) are walked block by block.
LOCAL_FIELD_BYTES = 4 << 20
#: ... for calls with at least this many points; below, ordering costs more than it saves.
LOCAL_MIN_POINTS = 1 << 16
_LOCAL_CHUNK = 1 << 20


def affine_field_affine_any_order(points, pre, field, to_index, post, outside_nan, out):
    """:func:`affine_field_affine` for points in any order, with cache-friendly field access.

    Points in random order make every lookup in a large field a cache miss. For
    large calls the points are bucketed by the field block they fall in
    (counting sort, chunks of about a million), mapped bucket by bucket and put
    back in their original order. Every point gets exactly the arithmetic of
    :func:`affine_field_affine`, so results are identical bit for bit.
    """
    n = points.shape[0]
    if n < LOCAL_MIN_POINTS or field.nbytes < LOCAL_FIELD_BYTES:
        affine_field_affine(points, pre, field, to_index, post, outside_nan, out)
        return
    nx, ny, nz = field.shape[0], field.shape[1], field.shape[2]
    block = 8
    while -(-nx // block) * -(-ny // block) * -(-nz // block) > (1 << 21):
        block *= 2
    nblocks = np.array([-(-nx // block), -(-ny // block), -(-nz // block)], np.int64)
    # Number blocks with the axis of largest memory stride slowest (C order: axis 0; ITK order: axis 2).
    mult = np.zeros(3, np.int64)
    step = 1
    for ax in np.argsort(np.asarray(field.strides[:3])):
        mult[ax] = step
        step *= int(nblocks[ax])
    nkeys = step + 1
    size = min(n, _LOCAL_CHUNK)
    keys = np.empty(size, np.int32)
    perm = np.empty(size, np.int32)
    # One buffer: points gathered into block order are mapped in place, then scattered back.
    # (Mapping through ``perm`` directly, without the buffer, measured twice as slow: the point
    # loads become random and the field loads wait on them.)
    ordered = np.empty((size, 3), np.float64)
    for start in range(0, n, size):
        stop = min(n, start + size)
        m = stop - start
        chunk = points[start:stop]
        _block_keys(chunk, pre, to_index, nx, ny, nz, block, mult, step, keys[:m])
        _counting_order(keys[:m], nkeys, nb.get_num_threads(), perm[:m])
        _gather_rows(chunk, perm[:m], ordered[:m])
        affine_field_affine(ordered[:m], pre, field, to_index, post, outside_nan, ordered[:m])
        _scatter_rows(ordered[:m], perm[:m], out[start:stop])


@njit_parallel()
def interleave_components(planar, out):
    """``out[z, y, x, c] = planar[c, z, y, x]``; returns how many values are NaN or inf.

    Turns a field stored one component after another (NIfTI's order for ANTs'
    5-D warps) into nodes with their three components together, checking every
    value on the way: one read and one write of the field.
    """
    nc, nz, ny, nx = planar.shape
    bad = 0
    for z in nb.prange(nz):
        b = 0
        for y in range(ny):
            for x in range(nx):
                for c in range(nc):
                    v = planar[c, z, y, x]
                    out[z, y, x, c] = v
                    if not np.isfinite(v):
                        b += 1
        bad += b
    return bad


@njit_parallel()
def count_nonfinite(flat):
    """Number of NaN/inf values in a 1-D array (parallel; no temporary mask)."""
    bad = 0
    for k in nb.prange(flat.shape[0]):
        if not np.isfinite(flat[k]):
            bad += 1
    return bad


@njit_parallel(**_PAR)
def invert_field_points(points, field, to_index, outside_nan, max_iter, tol, out, residual):
    """Solve x + u(x) = y for each y by fixed-point iteration x <- y - u(x).

    ``residual[k]`` receives |x + u(x) - y| at the end (NaN where x left the grid).
    Converges where |grad u| < 1, which holds for any diffeomorphic smooth field.
    """
    n = points.shape[0]
    nx, ny, nz = field.shape[0], field.shape[1], field.shape[2]
    for k in nb.prange(n):
        yx = points[k, 0]
        yy = points[k, 1]
        yz = points[k, 2]
        xx = yx
        xy = yy
        xz = yz
        res = np.inf
        ok = True
        for _ in range(max_iter):
            cx, cy, cz = _apply(to_index, xx, xy, xz)
            if _on_grid(cx, cy, cz, nx, ny, nz):
                ux, uy, uz = _trilinear_vec(field, cx, cy, cz, nx, ny, nz)
            elif outside_nan:
                ok = False
                break
            else:
                ux = 0.0
                uy = 0.0
                uz = 0.0
            ex = xx + ux - yx
            ey = xy + uy - yy
            ez = xz + uz - yz
            res = np.sqrt(ex * ex + ey * ey + ez * ez)
            if res <= tol:
                break
            xx = yx - ux
            xy = yy - uy
            xz = yz - uz
        if ok:
            out[k, 0] = xx
            out[k, 1] = xy
            out[k, 2] = xz
            residual[k] = res
        else:
            out[k, 0] = np.nan
            out[k, 1] = np.nan
            out[k, 2] = np.nan
            residual[k] = np.nan


@nb.njit(inline="always")
def trilinear(data, cx, cy, cz, nx, ny, nz):
    """Trilinear value of a 3-D array at a continuous index inside [-0.5, n - 0.5] (edges clamped).

    Shared by the in-memory resampler and the blockwise one (:mod:`atlasreg.distributed`), so both
    give bit-identical values."""
    x0 = min(max(int(np.floor(cx)), 0), nx - 1)
    y0 = min(max(int(np.floor(cy)), 0), ny - 1)
    z0 = min(max(int(np.floor(cz)), 0), nz - 1)
    x1 = min(x0 + 1, nx - 1)
    y1 = min(y0 + 1, ny - 1)
    z1 = min(z0 + 1, nz - 1)
    fx = min(max(cx - x0, 0.0), 1.0)
    fy = min(max(cy - y0, 0.0), 1.0)
    fz = min(max(cz - z0, 0.0), 1.0)
    c00 = data[x0, y0, z0] * (1 - fx) + data[x1, y0, z0] * fx
    c01 = data[x0, y0, z1] * (1 - fx) + data[x1, y0, z1] * fx
    c10 = data[x0, y1, z0] * (1 - fx) + data[x1, y1, z0] * fx
    c11 = data[x0, y1, z1] * (1 - fx) + data[x1, y1, z1] * fx
    c0 = c00 * (1 - fy) + c10 * fy
    c1 = c01 * (1 - fy) + c11 * fy
    return c0 * (1 - fz) + c1 * fz


@njit_parallel(**_PAR)
def sample_linear(data, cidx, fill, out):
    """Trilinear sample of a 3-D array at continuous indices; ``fill`` outside [-0.5, n-0.5]."""
    n = cidx.shape[0]
    nx, ny, nz = data.shape[0], data.shape[1], data.shape[2]
    for k in nb.prange(n):
        cx = cidx[k, 0]
        cy = cidx[k, 1]
        cz = cidx[k, 2]
        if not ((cx >= -0.5) and (cx <= nx - 0.5) and (cy >= -0.5) and (cy <= ny - 0.5)
                and (cz >= -0.5) and (cz <= nz - 0.5)):
            out[k] = fill
            continue
        out[k] = trilinear(data, cx, cy, cz, nx, ny, nz)


@njit_parallel(**_PAR)
def sample_nearest(data, cidx, fill, out):
    """Nearest-voxel sample (round half away from zero, CONVENTIONS: round, not floor)."""
    n = cidx.shape[0]
    nx, ny, nz = data.shape[0], data.shape[1], data.shape[2]
    for k in nb.prange(n):
        cx = cidx[k, 0]
        cy = cidx[k, 1]
        cz = cidx[k, 2]
        if not ((cx >= -0.5) and (cx < nx - 0.5) and (cy >= -0.5) and (cy < ny - 0.5)
                and (cz >= -0.5) and (cz < nz - 0.5)):
            out[k] = fill
            continue
        ix = int(np.floor(cx + 0.5))
        iy = int(np.floor(cy + 0.5))
        iz = int(np.floor(cz + 0.5))
        out[k] = data[ix, iy, iz]
