"""Numba kernels for the hot loops over points and voxels.

Vectorised numpy manages a few million points per second through a trilinear
field lookup; these parallel kernels do an order of magnitude more, which is
what makes mapping hundreds of millions of points practical.
"""
from __future__ import annotations

import numba as nb
import numpy as np

_PAR = dict(parallel=True, fastmath=False, cache=True, nogil=True)


@nb.njit(inline="always")
def _trilinear_vec(field, cx, cy, cz, nx, ny, nz):
    # Clamp-to-edge trilinear interpolation of a (nx, ny, nz, 3) field at a
    # continuous index already known to lie within [-0.5, n - 0.5].
    x0 = int(np.floor(cx))
    y0 = int(np.floor(cy))
    z0 = int(np.floor(cz))
    fx = cx - x0
    fy = cy - y0
    fz = cz - z0
    if x0 < 0:
        x0 = 0
        fx = 0.0
    if y0 < 0:
        y0 = 0
        fy = 0.0
    if z0 < 0:
        z0 = 0
        fz = 0.0
    x1 = x0 + 1
    y1 = y0 + 1
    z1 = z0 + 1
    if x1 > nx - 1:
        x1 = nx - 1
        if x0 > nx - 1:
            x0 = nx - 1
        fx = 0.0 if x0 == x1 else fx
    if y1 > ny - 1:
        y1 = ny - 1
        if y0 > ny - 1:
            y0 = ny - 1
        fy = 0.0 if y0 == y1 else fy
    if z1 > nz - 1:
        z1 = nz - 1
        if z0 > nz - 1:
            z0 = nz - 1
        fz = 0.0 if z0 == z1 else fz
    r0 = 0.0
    r1 = 0.0
    r2 = 0.0
    for dx in range(2):
        ix = x1 if dx else x0
        wx = fx if dx else 1.0 - fx
        if wx == 0.0:
            continue
        for dy in range(2):
            iy = y1 if dy else y0
            wy = fy if dy else 1.0 - fy
            if wy == 0.0:
                continue
            for dz in range(2):
                iz = z1 if dz else z0
                wz = fz if dz else 1.0 - fz
                if wz == 0.0:
                    continue
                w = wx * wy * wz
                r0 += w * field[ix, iy, iz, 0]
                r1 += w * field[ix, iy, iz, 1]
                r2 += w * field[ix, iy, iz, 2]
    return r0, r1, r2


@nb.njit(**_PAR)
def affine_field_affine(points, pre, field, to_index, post, outside_nan, out):
    """out = post(q + u(q)) with q = pre(p); ``pre``/``post``/``to_index`` are 3x4 matrices.

    Points whose q lies outside the field's grid (continuous index outside
    [-0.5, n - 0.5]) get NaN when ``outside_nan`` else zero displacement.
    """
    n = points.shape[0]
    nx, ny, nz = field.shape[0], field.shape[1], field.shape[2]
    for k in nb.prange(n):
        px = points[k, 0]
        py = points[k, 1]
        pz = points[k, 2]
        qx = pre[0, 0] * px + pre[0, 1] * py + pre[0, 2] * pz + pre[0, 3]
        qy = pre[1, 0] * px + pre[1, 1] * py + pre[1, 2] * pz + pre[1, 3]
        qz = pre[2, 0] * px + pre[2, 1] * py + pre[2, 2] * pz + pre[2, 3]
        cx = to_index[0, 0] * qx + to_index[0, 1] * qy + to_index[0, 2] * qz + to_index[0, 3]
        cy = to_index[1, 0] * qx + to_index[1, 1] * qy + to_index[1, 2] * qz + to_index[1, 3]
        cz = to_index[2, 0] * qx + to_index[2, 1] * qy + to_index[2, 2] * qz + to_index[2, 3]
        inside = (cx >= -0.5) and (cx <= nx - 0.5) and (cy >= -0.5) and (cy <= ny - 0.5) \
            and (cz >= -0.5) and (cz <= nz - 0.5)
        if inside:
            ux, uy, uz = _trilinear_vec(field, cx, cy, cz, nx, ny, nz)
        elif outside_nan:
            out[k, 0] = np.nan
            out[k, 1] = np.nan
            out[k, 2] = np.nan
            continue
        else:
            ux = 0.0
            uy = 0.0
            uz = 0.0
        rx = qx + ux
        ry = qy + uy
        rz = qz + uz
        out[k, 0] = post[0, 0] * rx + post[0, 1] * ry + post[0, 2] * rz + post[0, 3]
        out[k, 1] = post[1, 0] * rx + post[1, 1] * ry + post[1, 2] * rz + post[1, 3]
        out[k, 2] = post[2, 0] * rx + post[2, 1] * ry + post[2, 2] * rz + post[2, 3]


@nb.njit(**_PAR)
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
            cx = to_index[0, 0] * xx + to_index[0, 1] * xy + to_index[0, 2] * xz + to_index[0, 3]
            cy = to_index[1, 0] * xx + to_index[1, 1] * xy + to_index[1, 2] * xz + to_index[1, 3]
            cz = to_index[2, 0] * xx + to_index[2, 1] * xy + to_index[2, 2] * xz + to_index[2, 3]
            inside = (cx >= -0.5) and (cx <= nx - 0.5) and (cy >= -0.5) and (cy <= ny - 0.5) \
                and (cz >= -0.5) and (cz <= nz - 0.5)
            if inside:
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


@nb.njit(**_PAR)
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
        out[k] = c0 * (1 - fz) + c1 * fz


@nb.njit(**_PAR)
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
