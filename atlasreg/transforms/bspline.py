"""Cubic B-spline transforms ``y = x + sum_k B(c - k) w_k``: ITK's and elastix's deformable output.

The coefficients ``w_k`` (physical displacements) sit on a control grid with
its own origin, spacing and direction, as ITK's ``BSplineTransform`` stores
them (fixed parameters: grid size, origin, spacing, direction; parameters: all
x coefficients, then all y, then all z, each in ITK's index order, x fastest).
A point with continuous grid index ``c`` is moved by the 4x4x4 coefficients
from ``floor(c) - 1``. Where that support is not entirely on the grid
(``c < 1`` or ``c >= size - 2`` on an axis), ITK applies no displacement; that
is ``outside="zero"`` (the default, so ``map_points`` equals SimpleITK's
``TransformPoint`` everywhere); ``outside="nan"`` marks those points instead.
"""
from __future__ import annotations

import hashlib

import numba as nb
import numpy as np

from ..errors import InputError
from .base import Transform
from .field import GridFrame, grid_affine



@nb.njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _bspline_map(pts, M, w, outside_nan, out):  # pragma: no cover - compiled
    """``out = pts + sum of the 4x4x4 weighted coefficients`` per point (ITK's cubic B-spline rule)."""
    nx, ny, nz = w.shape[0], w.shape[1], w.shape[2]
    for n in nb.prange(pts.shape[0]):
        p0, p1, p2 = pts[n, 0], pts[n, 1], pts[n, 2]
        c = np.empty(3)
        for a in range(3):
            c[a] = M[a, 0] * p0 + M[a, 1] * p1 + M[a, 2] * p2 + M[a, 3]
        if not (c[0] >= 1.0 and c[0] < nx - 2.0 and c[1] >= 1.0 and c[1] < ny - 2.0
                and c[2] >= 1.0 and c[2] < nz - 2.0):
            v = np.nan if outside_nan else 0.0
            out[n, 0] = p0 + v
            out[n, 1] = p1 + v
            out[n, 2] = p2 + v
            continue
        wt = np.empty((3, 4))
        i0 = np.empty(3, np.int64)
        for a in range(3):
            b = np.floor(c[a])
            f = c[a] - b
            i0[a] = np.int64(b) - 1
            f2 = f * f
            f3 = f2 * f
            wt[a, 0] = (1.0 - f) ** 3 / 6.0
            wt[a, 1] = (3.0 * f3 - 6.0 * f2 + 4.0) / 6.0
            wt[a, 2] = (-3.0 * f3 + 3.0 * f2 + 3.0 * f + 1.0) / 6.0
            wt[a, 3] = f3 / 6.0
        d0 = 0.0
        d1 = 0.0
        d2 = 0.0
        for i in range(4):
            for j in range(4):
                wij = wt[0, i] * wt[1, j]
                for k in range(4):
                    q = wij * wt[2, k]
                    d0 += q * w[i0[0] + i, i0[1] + j, i0[2] + k, 0]
                    d1 += q * w[i0[0] + i, i0[1] + j, i0[2] + k, 1]
                    d2 += q * w[i0[0] + i, i0[1] + j, i0[2] + k, 2]
        out[n, 0] = p0 + d0
        out[n, 1] = p1 + d1
        out[n, 2] = p2 + d2


class BSplineTransform(GridFrame, Transform):
    """A cubic B-spline deformation ``src -> dst`` (ITK ``BSplineTransform``, elastix ``BSplineTransform``).

    Parameters
    ----------
    coefficients : array_like, shape (X, Y, Z, 3)
        Control-point displacements in physical units of ``src`` (== those of ``dst``).
    spacing, origin, direction :
        The control grid (CONVENTIONS: ``p = origin + D @ (spacing * i)``), as ITK's
        fixed parameters give it (``GridOrigin`` is the first control point, one
        spacing outside the image domain for a grid ITK's initializer made).
    outside : {"zero", "nan"}
        Points whose support leaves the grid: no displacement (ITK) or NaN.

    Examples
    --------
    >>> w = np.zeros((5, 5, 5, 3)); w[2, 2, 2, 0] = 6.0
    >>> T = BSplineTransform(w, spacing=(10, 10, 10), src="fixed", dst="moving")
    >>> T.map_points([[20.0, 20, 20]])          # B(0)^3 * 6 = (2/3)^3 * 6
    array([[21.77777778, 20.        , 20.        ]])
    """

    def __init__(self, coefficients, spacing=(1.0, 1.0, 1.0), origin=None, direction=None, src="src", dst="dst",
                 outside: str = "zero"):
        super().__init__(src, dst)
        w = np.asarray(coefficients, dtype=np.float64)
        if w.ndim != 4 or w.shape[3] != 3:
            raise InputError(f"B-spline coefficients must have shape (X, Y, Z, 3), got {w.shape}",
                             field="coefficients")
        if min(w.shape[:3]) < 4:
            raise InputError(f"a cubic B-spline grid needs at least 4 control points per axis, got {w.shape[:3]}",
                             field="coefficients")
        if not np.all(np.isfinite(w)):
            raise InputError("B-spline coefficients contain NaN or inf", field="coefficients")
        if self.src.unit != self.dst.unit:
            raise InputError(f"a B-spline maps within one unit, but src is {self.src.unit} and dst "
                             f"{self.dst.unit}; chain an Affine.from_units step instead", field="unit")
        if outside not in ("nan", "zero"):
            raise InputError("outside must be 'nan' or 'zero'", field="outside")
        self.coefficients = np.ascontiguousarray(w)
        self.outside = outside
        self.index_to_physical = grid_affine(spacing, origin, direction)
        if not np.all(np.isfinite(self.index_to_physical)) or abs(np.linalg.det(self.index_to_physical)) < 1e-300:
            raise InputError("B-spline grid geometry is singular or not finite (zero spacing?)", field="spacing")
        self.physical_to_index = np.linalg.inv(self.index_to_physical)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Control points per axis (ITK's ``GridSize``)."""
        return tuple(self.coefficients.shape[:3])

    def _map(self, pts: np.ndarray) -> np.ndarray:
        out = np.empty_like(pts)
        _bspline_map(np.ascontiguousarray(pts, dtype=np.float64), self.physical_to_index[:3].copy(),
                     self.coefficients, self.outside == "nan", out)
        return out

    def _inverse(self) -> Transform:
        raise InputError(
            f"the B-spline {self.src.name} -> {self.dst.name} has no closed-form inverse, and atlasreg does not "
            "solve B-spline inverses numerically yet: map points the way the file maps them (ITK/elastix "
            "files: fixed -> moving), or register the other way", field="inverse")

    def token(self) -> str:
        """Content fingerprint (coefficients, grid, outside policy, spaces), e.g. for resumable jobs."""
        h = hashlib.sha256(self.coefficients.tobytes())
        h.update(self.index_to_physical.tobytes())
        h.update(f"{self.outside}|{self.src!r}|{self.dst!r}".encode())
        return h.hexdigest()

    def max_displacement(self) -> float:
        """Largest coefficient length (a bound on the displacement: the weights sum to 1)."""
        return float(np.sqrt((self.coefficients ** 2).sum(-1)).max())
