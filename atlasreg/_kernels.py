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


@nb.njit(inline="always")
def trilinear(data, cx, cy, cz, nx, ny, nz):
    """Trilinear value of a 3-D array at a continuous index inside [-0.5, n - 0.5] (edges clamped).

    Neighbours, weights and edge clamping come from the same rule as the displacement-field kernels
    (:func:`_axis`); shared by the in-memory resampler and the blockwise one (:mod:`atlasreg.distributed`),
    so both give bit-identical values."""
    x0, x1, fx = _axis(cx, nx)
    y0, y1, fy = _axis(cy, ny)
    z0, z1, fz = _axis(cz, nz)
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
        if not _on_grid(cx, cy, cz, nx, ny, nz):
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


# -- the numerical inverse: ONE damped-Newton solver for every non-linear transform -------------------------
#: Status codes of :func:`newton_inverse` (per point).
CONVERGED, OUTSIDE, NOT_CONVERGED = 0, 1, 2
#: Kinds of forward map :func:`newton_inverse` evaluates.
FIELD, TPS, BSPLINE = 0, 1, 2


@nb.njit(inline="always")
def _lerp3_jac(field, c, x0, x1, y0, y1, z0, z1, fx, fy, fz, ax, ay, az):
    # component c of the trilinear interpolant and its derivatives along the three index axes
    gx = 1.0 - fx
    gy = 1.0 - fy
    gz = 1.0 - fz
    v000 = field[x0, y0, z0, c]
    v001 = field[x0, y0, z1, c]
    v010 = field[x0, y1, z0, c]
    v011 = field[x0, y1, z1, c]
    v100 = field[x1, y0, z0, c]
    v101 = field[x1, y0, z1, c]
    v110 = field[x1, y1, z0, c]
    v111 = field[x1, y1, z1, c]
    a00 = gz * v000 + fz * v001
    a01 = gz * v010 + fz * v011
    a10 = gz * v100 + fz * v101
    a11 = gz * v110 + fz * v111
    b0 = gy * a00 + fy * a01
    b1 = gy * a10 + fy * a11
    return (gx * b0 + fx * b1, ax * (b1 - b0), ay * (gx * (a01 - a00) + fx * (a11 - a10)),
            az * (gx * (gy * (v001 - v000) + fy * (v011 - v010)) + fx * (gy * (v101 - v100) + fy * (v111 - v110))))


@nb.njit(cache=True, nogil=True)
def _trilinear_vec_jac(field, cx, cy, cz, nx, ny, nz):
    # u at a continuous index (the interpolant of _trilinear_vec, clamp-to-edge) and its derivative
    # du_c/dindex_a (zero along an axis in its outer half voxel), as (u0, u1, u2, D00, D01, ..., D22).
    x0, x1, fx = _axis(cx, nx)
    y0, y1, fy = _axis(cy, ny)
    z0, z1, fz = _axis(cz, nz)
    ax = 1.0 if (cx > 0.0 and cx < nx - 1) else 0.0
    ay = 1.0 if (cy > 0.0 and cy < ny - 1) else 0.0
    az = 1.0 if (cz > 0.0 and cz < nz - 1) else 0.0
    u0, d00, d01, d02 = _lerp3_jac(field, 0, x0, x1, y0, y1, z0, z1, fx, fy, fz, ax, ay, az)
    u1, d10, d11, d12 = _lerp3_jac(field, 1, x0, x1, y0, y1, z0, z1, fx, fy, fz, ax, ay, az)
    u2, d20, d21, d22 = _lerp3_jac(field, 2, x0, x1, y0, y1, z0, z1, fx, fy, fz, ax, ay, az)
    return (u0, u1, u2, d00, d01, d02, d10, d11, d12, d20, d21, d22)


@nb.njit(inline="always")
def bspline_inside(cx, cy, cz, nx, ny, nz):
    # ITK's valid region of a cubic B-spline: the 4x4x4 support from floor(c) - 1 lies on the grid
    return cx >= 1.0 and cx < nx - 2.0 and cy >= 1.0 and cy < ny - 2.0 and cz >= 1.0 and cz < nz - 2.0


@nb.njit(inline="always")
def _cubic_w(f):
    # cubic B-spline weights of nodes floor(c) - 1 .. floor(c) + 2 (f = c - floor(c)) and their derivatives
    f2 = f * f
    f3 = f2 * f
    g = 1.0 - f
    return ((g * g * g / 6.0, (3.0 * f3 - 6.0 * f2 + 4.0) / 6.0, (-3.0 * f3 + 3.0 * f2 + 3.0 * f + 1.0) / 6.0,
             f3 / 6.0),
            (-0.5 * g * g, 1.5 * f2 - 2.0 * f, -1.5 * f2 + f + 0.5, 0.5 * f2))


@nb.njit(cache=True, nogil=True)
def bspline_point(w, cx, cy, cz, jac):
    """A cubic B-spline's displacement at continuous index ``c`` (inside its support, see
    :func:`bspline_inside`) and, with ``jac``, its derivatives along the index axes:
    ``(u0, u1, u2, D00, D01, ..., D22)`` with ``D[j, a] = du_j / dc_a``."""
    bx = np.floor(cx)
    by = np.floor(cy)
    bz = np.floor(cz)
    wx, dx = _cubic_w(cx - bx)
    wy, dy = _cubic_w(cy - by)
    wz, dz = _cubic_w(cz - bz)
    i0 = int(bx) - 1
    j0 = int(by) - 1
    k0 = int(bz) - 1
    u = np.zeros(3)
    D = np.zeros((3, 3))
    for i in range(4):
        for j in range(4):
            wij = wx[i] * wy[j]
            for k in range(4):
                q = wij * wz[k]
                for c in range(3):
                    v = w[i0 + i, j0 + j, k0 + k, c]
                    u[c] += q * v
                    if jac:
                        D[c, 0] += dx[i] * wy[j] * wz[k] * v
                        D[c, 1] += wx[i] * dy[j] * wz[k] * v
                        D[c, 2] += wij * dz[k] * v
    return (u[0], u[1], u[2], D[0, 0], D[0, 1], D[0, 2], D[1, 0], D[1, 1], D[1, 2], D[2, 0], D[2, 1], D[2, 2])


@njit_parallel(**_PAR)
def bspline_map(pts, to_index, w, outside_nan, out):
    """``out = pts + u(pts)`` for a cubic B-spline (ITK's rule: no displacement, or NaN with
    ``outside_nan``, where the support leaves the grid)."""
    nx, ny, nz = w.shape[0], w.shape[1], w.shape[2]
    for n in nb.prange(pts.shape[0]):
        p0, p1, p2 = pts[n, 0], pts[n, 1], pts[n, 2]
        cx, cy, cz = _apply(to_index, p0, p1, p2)
        if bspline_inside(cx, cy, cz, nx, ny, nz):
            t = bspline_point(w, cx, cy, cz, False)
            out[n, 0] = p0 + t[0]
            out[n, 1] = p1 + t[1]
            out[n, 2] = p2 + t[2]
        else:
            v = np.nan if outside_nan else 0.0
            out[n, 0] = p0 + v
            out[n, 1] = p1 + v
            out[n, 2] = p2 + v


@nb.njit(cache=True, nogil=True)
def tps_point(q0, q1, q2, centres, weights, coeffs, kernel, jac):
    """A thin-plate spline at one point ``q`` of its normalised frame: ``(y0, y1, y2, D00, ..., D22)``.

    ``D[j, a] = dy_j/dq_a`` (zeros unless ``jac``). ``coeffs`` rows are the constant and the x, y, z
    terms; ``kernel`` 0 is ``-r``, 1 is ``0.5 r² log r²``, 2 is ``r³``.
    """
    o0 = coeffs[0, 0] + coeffs[1, 0] * q0 + coeffs[2, 0] * q1 + coeffs[3, 0] * q2
    o1 = coeffs[0, 1] + coeffs[1, 1] * q0 + coeffs[2, 1] * q1 + coeffs[3, 1] * q2
    o2 = coeffs[0, 2] + coeffs[1, 2] * q0 + coeffs[2, 2] * q1 + coeffs[3, 2] * q2
    d00, d01, d02 = coeffs[1, 0], coeffs[2, 0], coeffs[3, 0]
    d10, d11, d12 = coeffs[1, 1], coeffs[2, 1], coeffs[3, 1]
    d20, d21, d22 = coeffs[1, 2], coeffs[2, 2], coeffs[3, 2]
    for k in range(centres.shape[0]):
        dx = q0 - centres[k, 0]
        dy = q1 - centres[k, 1]
        dz = q2 - centres[k, 2]
        r2 = dx * dx + dy * dy + dz * dz
        if kernel == 0:
            rr = np.sqrt(r2)
            u = -rr
            g = -1.0 / rr if rr > 0 else 0.0  # dU/dq = g * (q - c)
        elif kernel == 1:
            if r2 > 0:
                lg = np.log(r2)
                u = 0.5 * r2 * lg
                g = lg + 1.0
            else:
                u = 0.0
                g = 0.0
        else:
            rr = np.sqrt(r2)
            u = r2 * rr
            g = 3.0 * rr
        w0 = weights[k, 0]
        w1 = weights[k, 1]
        w2 = weights[k, 2]
        o0 += w0 * u
        o1 += w1 * u
        o2 += w2 * u
        if jac:
            d00 += w0 * g * dx
            d01 += w0 * g * dy
            d02 += w0 * g * dz
            d10 += w1 * g * dx
            d11 += w1 * g * dy
            d12 += w1 * g * dz
            d20 += w2 * g * dx
            d21 += w2 * g * dy
            d22 += w2 * g * dz
    return (o0, o1, o2, d00, d01, d02, d10, d11, d12, d20, d21, d22)


@njit_parallel(**_PAR)
def tps_eval(q, centres, weights, coeffs, kernel, out):
    """Thin-plate spline values at points ``q`` of its normalised frame (see :func:`tps_point`)."""
    for i in nb.prange(q.shape[0]):
        t = tps_point(q[i, 0], q[i, 1], q[i, 2], centres, weights, coeffs, kernel, False)
        out[i, 0] = t[0]
        out[i, 1] = t[1]
        out[i, 2] = t[2]


@nb.njit(cache=True, nogil=True)
def _forward_jac(kind, x0, x1, x2, field, to_index, outside_nan, frame, centres, weights, coeffs, kernel):
    # (ok, T(x) (3), dT/dx row-major (9)) in physical units; ok False where T(x) is undefined.
    if kind == FIELD or kind == BSPLINE:  # x + u(x), u sampled on a grid (``field``: nodes or coefficients)
        nx, ny, nz = field.shape[0], field.shape[1], field.shape[2]
        cx, cy, cz = _apply(to_index, x0, x1, x2)
        m = to_index
        if kind == FIELD and _on_grid(cx, cy, cz, nx, ny, nz):
            t = _trilinear_vec_jac(field, cx, cy, cz, nx, ny, nz)
        elif kind == BSPLINE and bspline_inside(cx, cy, cz, nx, ny, nz):
            t = bspline_point(field, cx, cy, cz, True)
        elif outside_nan:
            return (False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        else:
            t = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        f0 = x0 + t[0]
        f1 = x1 + t[1]
        f2 = x2 + t[2]
        one = 1.0
    else:
        m = frame
        q0, q1, q2 = _apply(frame, x0, x1, x2)
        t = tps_point(q0, q1, q2, centres, weights, coeffs, kernel, True)
        f0 = t[0]
        f1 = t[1]
        f2 = t[2]
        one = 0.0
    # chain rule through the 3x3 part of m (index or normalised frame), plus I for a field
    return (True, f0, f1, f2,
            one + t[3] * m[0, 0] + t[4] * m[1, 0] + t[5] * m[2, 0],
            t[3] * m[0, 1] + t[4] * m[1, 1] + t[5] * m[2, 1],
            t[3] * m[0, 2] + t[4] * m[1, 2] + t[5] * m[2, 2],
            t[6] * m[0, 0] + t[7] * m[1, 0] + t[8] * m[2, 0],
            one + t[6] * m[0, 1] + t[7] * m[1, 1] + t[8] * m[2, 1],
            t[6] * m[0, 2] + t[7] * m[1, 2] + t[8] * m[2, 2],
            t[9] * m[0, 0] + t[10] * m[1, 0] + t[11] * m[2, 0],
            t[9] * m[0, 1] + t[10] * m[1, 1] + t[11] * m[2, 1],
            one + t[9] * m[0, 2] + t[10] * m[1, 2] + t[11] * m[2, 2])


@nb.njit(inline="always")
def _newton_step(r, e0, e1, e2):
    # dx with J @ dx = -e for J = r[4:13] (Cramer's rule); ok False for a (numerically) singular J.
    a, b, c = r[4], r[5], r[6]
    d, f, g = r[7], r[8], r[9]
    h, i, k = r[10], r[11], r[12]
    A = f * k - g * i
    B = g * h - d * k
    C = d * i - f * h
    det = a * A + b * B + c * C
    scale = abs(a) + abs(b) + abs(c) + abs(d) + abs(f) + abs(g) + abs(h) + abs(i) + abs(k)
    if not (abs(det) > 1e-12 * scale * scale * scale):
        return False, 0.0, 0.0, 0.0
    inv = -1.0 / det
    return (True, inv * (A * e0 + (c * i - b * k) * e1 + (b * g - c * f) * e2),
            inv * (B * e0 + (a * k - c * h) * e1 + (c * d - a * g) * e2),
            inv * (C * e0 + (b * h - a * i) * e1 + (a * f - b * d) * e2))


@njit_parallel(**_PAR)
def newton_inverse(kind, field, to_index, outside_nan, frame, centres, weights, coeffs, kernel,
                   y, x0, field_start, tol, max_iter, out, residual, status):
    """Solve ``T(x) = y`` per point by damped Newton on ``T``'s exact Jacobian.

    ``kind`` selects the forward map: :data:`FIELD` (``x + u(x)``, ``u`` trilinear in ``field`` with
    ``to_index`` its physical -> index 3x4 matrix), :data:`BSPLINE` (the same with ``u`` the cubic
    B-spline of the coefficients in ``field``, see :func:`bspline_point`) or :data:`TPS` (the spline of ``frame``, ``centres``,
    ``weights``, ``coeffs``, ``kernel``; see :func:`tps_point`). The start is ``x0[k]``, or with
    ``field_start`` one fixed-point step ``y - u(y)`` (``y`` clamped onto the grid). Each step solves
    ``J dx = y - T(x)`` and halves ``dx`` until ``|T(x) - y|`` decreases (and ``x`` stays where ``T``
    is defined). A point is done when ``|T(x) - y| <= tol``.

    ``status[k]``: :data:`CONVERGED`; :data:`OUTSIDE` (the solution lies off the domain of ``T``: the
    full Newton step leaves it and no shorter one helps, or it leaves it three steps in a row; the
    forward map is NaN there too);
    :data:`NOT_CONVERGED` (``max_iter`` steps, a singular Jacobian, or no decrease). ``out[k]`` is the
    last iterate (NaN when outside), ``residual[k]`` its ``|T(x) - y|`` (NaN when outside).
    """
    n = y.shape[0]
    nx, ny, nz = field.shape[0], field.shape[1], field.shape[2]
    for k in nb.prange(n):
        y0 = y[k, 0]
        y1 = y[k, 1]
        y2 = y[k, 2]
        st = NOT_CONVERGED
        res = np.nan
        p0 = p1 = p2 = np.nan
        if not (np.isfinite(y0) and np.isfinite(y1) and np.isfinite(y2)):
            st = OUTSIDE
        else:
            if field_start:
                cx, cy, cz = _apply(to_index, y0, y1, y2)
                cx = min(max(cx, -0.5), nx - 0.5)
                cy = min(max(cy, -0.5), ny - 0.5)
                cz = min(max(cz, -0.5), nz - 0.5)
                ux, uy, uz = _trilinear_vec(field, cx, cy, cz, nx, ny, nz)
                p0 = y0 - ux
                p1 = y1 - uy
                p2 = y2 - uz
            else:
                p0 = x0[k, 0]
                p1 = x0[k, 1]
                p2 = x0[k, 2]
            r = _forward_jac(kind, p0, p1, p2, field, to_index, outside_nan, frame, centres, weights, coeffs,
                             kernel)
            if not r[0] and field_start:
                # the fixed-point start left the grid: start from y itself
                p0, p1, p2 = y0, y1, y2
                r = _forward_jac(kind, p0, p1, p2, field, to_index, outside_nan, frame, centres, weights,
                                 coeffs, kernel)
            if not r[0]:
                st = OUTSIDE
            else:
                e0 = r[1] - y0
                e1 = r[2] - y1
                e2 = r[3] - y2
                res = np.sqrt(e0 * e0 + e1 * e1 + e2 * e2)
                first_off = False
                pinned = 0  # consecutive steps whose full length left the domain
                for _ in range(max_iter + 1):
                    if res <= tol:
                        st = CONVERGED
                        break
                    if pinned >= 3:
                        break  # pressed against the domain's edge: the solution lies beyond it
                    good, d0, d1, d2 = _newton_step(r, e0, e1, e2)
                    if not good:
                        break
                    alpha = 1.0
                    moved = False
                    first_off = False
                    for t in range(40):
                        q0 = p0 + alpha * d0
                        q1 = p1 + alpha * d1
                        q2 = p2 + alpha * d2
                        rn = _forward_jac(kind, q0, q1, q2, field, to_index, outside_nan, frame, centres, weights,
                                          coeffs, kernel)
                        if rn[0]:
                            f0 = rn[1] - y0
                            f1 = rn[2] - y1
                            f2 = rn[3] - y2
                            rr = np.sqrt(f0 * f0 + f1 * f1 + f2 * f2)
                            if rr < res:
                                p0, p1, p2 = q0, q1, q2
                                e0, e1, e2 = f0, f1, f2
                                res = rr
                                r = rn
                                moved = True
                                break
                        elif t == 0:
                            first_off = True
                        alpha *= 0.5
                    if not moved:
                        break
                    pinned = pinned + 1 if first_off else 0
                if st == NOT_CONVERGED and first_off:
                    # the last full step wanted to leave the domain: the solution lies beyond its edge
                    st = OUTSIDE
        status[k] = st
        if st == OUTSIDE:
            residual[k] = np.nan
            out[k, 0] = np.nan
            out[k, 1] = np.nan
            out[k, 2] = np.nan
        else:
            residual[k] = res
            out[k, 0] = p0
            out[k, 1] = p1
            out[k, 2] = p2
