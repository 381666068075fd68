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

import numpy as np

from ..errors import InputError
from .base import Transform
from .field import GridFrame, grid_affine

_CHUNK = 16384  # points per gathered block (64 coefficients of 3 components each)


def cubic_weights(f: np.ndarray) -> np.ndarray:
    """The four cubic B-spline weights ``(N, 4)`` of nodes ``floor(c) - 1 .. floor(c) + 2`` for ``f = c - floor(c)``."""
    f2, f3 = f * f, f * f * f
    return np.stack([(1 - f) ** 3, 3 * f3 - 6 * f2 + 4, -3 * f3 + 3 * f2 + 3 * f + 1, f3], axis=-1) / 6.0


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
        out = pts.copy()
        size = np.asarray(self.shape)
        M = self.physical_to_index
        w = self.coefficients
        for a in range(0, len(pts), _CHUNK):
            p = pts[a:a + _CHUNK]
            c = p @ M[:3, :3].T + M[:3, 3]
            inside = np.all((c >= 1.0) & (c < size - 2.0), axis=1)
            if self.outside == "nan":
                out[a:a + _CHUNK][~inside] = np.nan
            rows = np.flatnonzero(inside)
            if rows.size == 0:
                continue
            ci = c[rows]
            base = np.floor(ci)
            wx, wy, wz = (cubic_weights(ci[:, k] - base[:, k]) for k in range(3))
            i0 = base.astype(np.int64) - 1
            ix = i0[:, 0, None] + np.arange(4)
            iy = i0[:, 1, None] + np.arange(4)
            iz = i0[:, 2, None] + np.arange(4)
            block = w[ix[:, :, None, None], iy[:, None, :, None], iz[:, None, None, :]]  # (n, 4, 4, 4, 3)
            out[a + rows] += np.einsum("ni,nj,nk,nijkc->nc", wx, wy, wz, block, optimize=True)
        return out

    def _inverse(self) -> Transform:
        raise InputError(
            f"the B-spline {self.src.name} -> {self.dst.name} has no closed-form inverse, and atlasreg does not "
            "solve B-spline inverses numerically yet: map points the way the file maps them (ITK/elastix "
            "files: fixed -> moving), or register the other way", field="inverse")

    def max_displacement(self) -> float:
        """Largest coefficient length (a bound on the displacement: the weights sum to 1)."""
        return float(np.sqrt((self.coefficients ** 2).sum(-1)).max())
