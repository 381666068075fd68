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

import numpy as np

from .. import _kernels as K
from ..errors import InputError
from .base import NumericalInverse, Transform
from .field import GridFrame, grid_affine
from .inverse import solve_bspline_inverse


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
        K.bspline_map(np.ascontiguousarray(pts, dtype=np.float64), self.physical_to_index[:3].copy(),
                      self.coefficients, self.outside == "nan", out)
        return out

    def _inverse(self) -> "InverseBSpline":
        return InverseBSpline(self)

    def token(self) -> str:
        """Content fingerprint (coefficients, grid, outside policy, spaces), e.g. for resumable jobs."""
        h = hashlib.sha256(self.coefficients.tobytes())
        h.update(self.index_to_physical.tobytes())
        h.update(f"{self.outside}|{self.src!r}|{self.dst!r}".encode())
        return h.hexdigest()

    def max_displacement(self) -> float:
        """Largest coefficient length (a bound on the displacement: the weights sum to 1)."""
        return float(np.sqrt((self.coefficients ** 2).sum(-1)).max())


class InverseBSpline(NumericalInverse):
    """The inverse of a :class:`BSplineTransform`, solved per point by :mod:`atlasreg.transforms.inverse`.

    Damped Newton on the spline's analytic Jacobian, from ``y``: exact to ``tol``
    (physical units; default 1e-6 of the control spacing) wherever the map is
    invertible. Points that do not converge (a fold) are NaN or raise
    :class:`~atlasreg.errors.ConvergenceError`, by ``on_fail``; ``last_report``
    counts them. Where ITK's rule leaves points in place (support off the grid,
    ``outside="zero"``) the map is not one-to-one at the edge of the support (a
    moved point can land where points stay put): the inverse returns a pre-image,
    always one with ``|T(x) - y| <= tol``.

    Examples
    --------
    >>> w = np.zeros((6, 6, 6, 3)); w[2:4, 2:4, 2:4, 0] = 4.0
    >>> T = BSplineTransform(w, spacing=(10, 10, 10), src="fixed", dst="moving")
    >>> y = T.map_points([[25.0, 25, 25]])
    >>> bool(np.allclose(T.inverse().map_points(y), [[25.0, 25, 25]], atol=1e-6))
    True
    """

    def _solve(self, pts: np.ndarray):
        f = self.forward
        return solve_bspline_inverse(f.coefficients, f.physical_to_index, f.outside == "nan", pts, self.tol,
                                     self.max_iter)
