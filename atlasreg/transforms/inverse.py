"""Numerical inverses: ONE solver for every transform without a closed-form inverse.

:class:`~atlasreg.transforms.field.InverseDisplacementField`,
:class:`~atlasreg.transforms.tps.InverseThinPlateSpline`,
:class:`~atlasreg.transforms.bspline.InverseBSpline`, the chunked field
inverse of :mod:`atlasreg.distributed.fields` and every numerical edge of a
:class:`~atlasreg.graph.SpaceGraph` solve ``T(x) = y`` here: damped Newton on
the forward map's exact Jacobian (the trilinear interpolant's for a field, the
spline's analytic one for a TPS), one kernel (:func:`atlasreg._kernels.newton_inverse`).

Newton needs only ``det J > 0`` along the way, so strong local stretches and
compressions (det J from 0.2 to 5) invert to ``tol``; plain fixed-point
iteration ``x <- y - u(x)`` diverges wherever ``|grad u| >= 1``.

Each point ends in one of three states, counted in an :class:`InverseReport`:

* converged: ``|T(x) - y| <= tol``;
* outside: the solution lies beyond the forward map's domain (a field with
  ``outside="nan"``), so the point is NaN, exactly as the forward map gives NaN
  there;
* failed: no convergence (a fold, ``max_iter`` steps). The ``on_fail`` policy
  decides: ``"nan"`` (default) returns NaN rows and logs a warning with the count
  and the worst residual; ``"raise"`` raises :class:`~atlasreg.errors.ConvergenceError`.

No point is ever returned with a residual above ``tol``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .. import _kernels as K
from ..errors import ConvergenceError, InputError

log = logging.getLogger(__name__)

#: Policies for points that do not converge.
ON_FAIL = ("nan", "raise")
#: Default Newton step limit (Newton converges in a handful of steps where it converges at all).
MAX_ITER = 60

_NO_FIELD = np.zeros((1, 1, 1, 3))
_NO_POINTS = np.zeros((1, 3))
_NO_COEFFS = np.zeros((4, 3))
_EYE34 = np.eye(4)[:3].copy()


def check_on_fail(on_fail: str) -> str:
    """Validate an ``on_fail`` policy (``"nan"`` or ``"raise"``)."""
    if on_fail not in ON_FAIL:
        raise InputError(f"on_fail must be one of {ON_FAIL}, got {on_fail!r}", field="on_fail")
    return on_fail


@dataclass(frozen=True)
class InverseReport:
    """What the last inverse call did, per point.

    ``max_residual`` is the worst ``|T(x) - y|`` over the points returned (all
    ``<= tol``); ``worst_failed_residual`` the worst over the points that failed
    (NaN when none did).
    """

    points: int
    converged: int
    outside: int
    failed: int
    max_residual: float
    worst_failed_residual: float
    tol: float

    def merged(self, other: "InverseReport") -> "InverseReport":
        """One report for two calls (e.g. the boxes of a chunked field)."""
        return InverseReport(self.points + other.points, self.converged + other.converged,
                             self.outside + other.outside, self.failed + other.failed,
                             _nanmax(self.max_residual, other.max_residual),
                             _nanmax(self.worst_failed_residual, other.worst_failed_residual),
                             max(self.tol, other.tol))

    @classmethod
    def empty(cls, tol: float) -> "InverseReport":
        return cls(0, 0, 0, 0, float("nan"), float("nan"), float(tol))


def _nanmax(a: float, b: float) -> float:
    if np.isnan(a):
        return b
    if np.isnan(b):
        return a
    return max(a, b)


def solve_field_inverse(field: np.ndarray, physical_to_index: np.ndarray, outside_nan: bool, points: np.ndarray,
                        tol: float, max_iter: int = MAX_ITER):
    """Solve ``x + u(x) = y`` for each row of ``points``; ``u`` trilinear in ``field`` (X, Y, Z, 3).

    Returns ``(x, residual, status)`` from :func:`atlasreg._kernels.newton_inverse`; pass them to
    :func:`finish` for the policy and the report.

    Examples
    --------
    >>> u = np.zeros((8, 8, 8, 3)); u[..., 0] = 1.5
    >>> x, res, st = solve_field_inverse(u, np.eye(4), True, np.array([[3.5, 2.0, 2.0]]), 1e-9)
    >>> x.round(6).tolist(), int(st[0])
    ([[2.0, 2.0, 2.0]], 0)
    """
    y = np.ascontiguousarray(points, dtype=np.float64)
    out = np.empty_like(y)
    res = np.empty(len(y))
    status = np.empty(len(y), np.int8)
    K.newton_inverse(K.FIELD, field, np.ascontiguousarray(physical_to_index[:3], dtype=np.float64),
                     bool(outside_nan), _EYE34, _NO_POINTS, _NO_POINTS, _NO_COEFFS, 0, y, y, True,
                     float(tol), int(max_iter), out, res, status)
    return out, res, status


def solve_bspline_inverse(coefficients: np.ndarray, physical_to_index: np.ndarray, outside_nan: bool,
                          points: np.ndarray, tol: float, max_iter: int = MAX_ITER):
    """Solve ``x + u(x) = y`` for each row of ``points``, ``u`` the cubic B-spline of ``coefficients``
    (X, Y, Z, 3) on the grid of ``physical_to_index``, starting from ``y``.

    Returns ``(x, residual, status)``; see :func:`finish`.
    """
    y = np.ascontiguousarray(points, dtype=np.float64)
    out = np.empty_like(y)
    res = np.empty(len(y))
    status = np.empty(len(y), np.int8)
    K.newton_inverse(K.BSPLINE, np.ascontiguousarray(coefficients, dtype=np.float64),
                     np.ascontiguousarray(physical_to_index[:3], dtype=np.float64), bool(outside_nan), _EYE34,
                     _NO_POINTS, _NO_POINTS, _NO_COEFFS, 0, y, y, False, float(tol), int(max_iter), out, res, status)
    return out, res, status


def solve_tps_inverse(frame: np.ndarray, centres: np.ndarray, weights: np.ndarray, coeffs: np.ndarray,
                      kernel: int, points: np.ndarray, start: np.ndarray, tol: float, max_iter: int = MAX_ITER):
    """Solve ``T(x) = y`` for a thin-plate spline (see :func:`atlasreg._kernels.tps_point`) from ``start``.

    Returns ``(x, residual, status)``; see :func:`finish`.
    """
    y = np.ascontiguousarray(points, dtype=np.float64)
    out = np.empty_like(y)
    res = np.empty(len(y))
    status = np.empty(len(y), np.int8)
    K.newton_inverse(K.TPS, _NO_FIELD, _EYE34, False, np.ascontiguousarray(frame[:3], dtype=np.float64),
                     np.ascontiguousarray(centres, dtype=np.float64), np.ascontiguousarray(weights, dtype=np.float64),
                     np.ascontiguousarray(coeffs, dtype=np.float64), int(kernel), y,
                     np.ascontiguousarray(start, dtype=np.float64), False, float(tol), int(max_iter), out, res,
                     status)
    return out, res, status


def finish(x: np.ndarray, residual: np.ndarray, status: np.ndarray, tol: float, on_fail: str,
           what: str = "inverse") -> tuple[np.ndarray, InverseReport]:
    """Apply the ``on_fail`` policy to a solver's output; returns ``(points, report)``.

    Failed points become NaN rows (``on_fail="nan"``, with a logged warning) or
    raise :class:`~atlasreg.errors.ConvergenceError` (``on_fail="raise"``).
    """
    failed = status == K.NOT_CONVERGED
    conv = status == K.CONVERGED
    nfail = int(failed.sum())
    known_failed = residual[failed][~np.isnan(residual[failed])]  # NaN where the map is unknown (a NaN node)
    rep = InverseReport(
        points=len(status), converged=int(conv.sum()), outside=int((status == K.OUTSIDE).sum()), failed=nfail,
        max_residual=float(residual[conv].max()) if conv.any() else float("nan"),
        worst_failed_residual=float(known_failed.max()) if known_failed.size else float("nan"), tol=float(tol))
    if nfail:
        msg = (f"{what}: {nfail} of {len(status)} points did not converge (worst residual "
               f"{rep.worst_failed_residual:.3g}, tolerance {tol:.3g}); the transform may fold there")
        if on_fail == "raise":
            raise ConvergenceError(msg)
        log.warning("%s; those points are NaN", msg)
        x = x.copy()
        x[failed] = np.nan
    return x, rep
