"""Thin-plate spline transforms fitted to landmark pairs."""
from __future__ import annotations

import numpy as np

from .. import _kernels as K
from ..errors import InputError
from ..spaces import apply_affine
from .base import NumericalInverse, Transform, as_points
from .inverse import MAX_ITER, solve_tps_inverse

KERNELS = ("r", "r2logr", "r3")


def kernel_matrix(a: np.ndarray, b: np.ndarray, kernel: str) -> np.ndarray:
    """Radial kernel ``U(|a_i - b_j|)`` between two point sets (normalised coordinates).

    The signs make every kernel conditionally positive definite (``-r`` for the
    3-D biharmonic ``r``), so ``U + λI`` is the smoothing spline's system for λ ≥ 0.
    """
    from scipy.spatial.distance import cdist  # here, not at import: `import atlasreg` stays light

    r2 = cdist(a, b, "sqeuclidean")
    if kernel == "r":
        return -np.sqrt(r2)
    if kernel == "r3":
        return r2 * np.sqrt(r2)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 0.5 * r2 * np.log(r2)
    u[r2 == 0] = 0.0
    return u


# Kept for callers of the old private name.
_kernel_matrix = kernel_matrix


def normalising_frame(points: np.ndarray, linear: np.ndarray | None = None) -> np.ndarray:
    """4x4 matrix taking points (optionally first through a 3x3 ``linear`` map) to a centred frame of unit RMS radius."""
    pts = np.asarray(points, float)
    L = np.eye(3) if linear is None else np.asarray(linear, float)
    q = pts @ L.T
    c = q.mean(0)
    scale = float(np.sqrt(((q - c) ** 2).sum(1).mean())) or 1.0
    F = np.eye(4)
    F[:3, :3] = L / scale
    F[:3, 3] = -c / scale
    return F


class ThinPlateSpline(Transform):
    """Thin-plate spline from ``src`` landmarks onto ``dst`` landmarks.

    Parameters
    ----------
    src_points, dst_points : (M, 3) arrays
        Landmark pairs, each in its space's unit.
    regularization : float
        Smoothing λ (0 interpolates the landmarks exactly). It is applied in the
        spline's normalised frame, so one value means the same across units.
    kernel : {"r", "r2logr", "r3"}
        Radial basis: ``r`` is the biharmonic 3-D thin-plate kernel (used as
        ``-r``, its conditionally positive definite sign); ``r2logr`` is the 2-D
        thin-plate kernel that scipy's ``thin_plate_spline`` uses.
    frame : (4, 4) array, optional
        Affine map from source coordinates to the normalised frame in which
        kernel distances are measured. Default: landmarks centred and scaled to
        unit RMS radius. :func:`atlasreg.fit_landmarks` passes a frame that first
        applies the landmarks' affine fit, so distances are measured as in the
        destination (an anisotropic source unit does not distort the kernel).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(0, 100, (20, 3)); d = s * 1.1 + np.sin(s / 30)
    >>> T = ThinPlateSpline(s, d, src="a", dst="b")
    >>> bool(np.allclose(T.map_points(s), d))
    True
    >>> bool(np.allclose(T.inverse().map_points(d), s, atol=1e-6))
    True
    """

    def __init__(self, src_points, dst_points, regularization: float = 0.0, kernel: str = "r",
                 src="src", dst="dst", frame=None):
        super().__init__(src, dst)
        s, d = self._check(src_points, dst_points, regularization, kernel)
        F = normalising_frame(s) if frame is None else _check_frame(frame)
        q = _apply(F, s)
        if np.linalg.matrix_rank(np.hstack([np.ones((len(q), 1)), q]), tol=1e-8 * np.sqrt(len(q))) < 4:
            raise InputError("source landmarks are coplanar or collinear: a 3-D spline is not determined",
                             field="points")
        w, a = solve_tps(q, d, float(regularization), kernel)
        self._set(s, d, float(regularization), kernel, F, q, w, a)

    @classmethod
    def from_solution(cls, src_points, dst_points, weights, affine_coeffs, regularization: float,
                      kernel: str, frame, src="src", dst="dst") -> "ThinPlateSpline":
        """Build a spline from an already solved system (kernel ``weights`` (M, 3), ``affine_coeffs`` (4, 3)).

        Used by landmark fitting, which solves for many λ at once; the result
        maps exactly as a spline constructed from the same points and λ.
        """
        self = cls.__new__(cls)
        Transform.__init__(self, src, dst)
        s, d = self._check(src_points, dst_points, regularization, kernel)
        F = _check_frame(frame)
        w = np.asarray(weights, float).reshape(len(s), 3)
        a = np.asarray(affine_coeffs, float).reshape(4, 3)
        self._set(s, d, float(regularization), kernel, F, _apply(F, s), w, a)
        return self

    @staticmethod
    def _check(src_points, dst_points, regularization, kernel):
        s = as_points(src_points, "src_points")
        d = as_points(dst_points, "dst_points")
        if len(s) != len(d):
            raise InputError(f"{len(s)} source landmarks but {len(d)} destination landmarks", field="points")
        if len(s) < 5:
            raise InputError(f"a thin-plate spline needs at least 5 landmark pairs, got {len(s)}",
                             field="points")
        if not (np.all(np.isfinite(s)) and np.all(np.isfinite(d))):
            raise InputError("landmarks contain NaN or inf", field="points")
        if kernel not in KERNELS:
            raise InputError(f"unknown kernel {kernel!r}; use one of {KERNELS}", field="kernel")
        if not np.isfinite(regularization) or regularization < 0:
            raise InputError("regularization must be a finite number >= 0", field="regularization")
        if regularization == 0 and len(np.unique(s, axis=0)) < len(s):
            raise InputError("duplicate source landmarks: an interpolating spline is undefined "
                             "(remove duplicates or set regularization > 0)", field="points")
        return s, d

    def _set(self, s, d, lam, kernel, F, q, w, a):
        self.src_points, self.dst_points = s, d
        self.regularization = lam
        self.kernel = kernel
        self.frame = F
        self._q = np.ascontiguousarray(q)
        self._w = np.ascontiguousarray(w)
        self._a = np.ascontiguousarray(a)  # rows: constant, x, y, z (normalised frame)
        self._kernel_id = KERNELS.index(kernel)

    @property
    def weights(self) -> np.ndarray:
        """Kernel weights ``(M, 3)`` (destination units)."""
        return self._w

    @property
    def affine_coeffs(self) -> np.ndarray:
        """Affine part ``(4, 3)`` in the normalised frame: rows constant, x, y, z."""
        return self._a

    def _map(self, pts: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(_apply(self.frame, pts))
        out = np.empty_like(q)
        K.tps_eval(q, self._q, self._w, self._a, self._kernel_id, out)
        out[~np.all(np.isfinite(pts), axis=1)] = np.nan
        return out

    @property
    def linear_part(self) -> np.ndarray:
        """3x3 matrix of the spline's affine part in physical units."""
        return self._a[1:].T @ self.frame[:3, :3]

    def _inverse(self) -> "InverseThinPlateSpline":
        return InverseThinPlateSpline(self)


def solve_tps(q: np.ndarray, d: np.ndarray, regularization: float, kernel: str):
    """Solve the (smoothing) spline system in normalised coordinates; returns (weights, affine_coeffs)."""
    M = len(q)
    A = np.zeros((M + 4, M + 4))
    A[:M, :M] = kernel_matrix(q, q, kernel)
    A[np.arange(M), np.arange(M)] += regularization
    A[:M, M] = 1.0
    A[:M, M + 1:] = q
    A[M:, :M] = A[:M, M:].T
    b = np.zeros((M + 4, 3))
    b[:M] = d
    import scipy.linalg

    try:
        # Symmetric indefinite (LDLᵀ): about half the work of LU for the 2,000-landmark systems.
        sol = scipy.linalg.solve(A, b, assume_a="sym", check_finite=False)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        sol = np.linalg.lstsq(A, b, rcond=None)[0]
    return sol[:M], sol[M:]


def _apply(F: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return apply_affine(F, pts)


def _check_frame(frame) -> np.ndarray:
    F = np.asarray(frame, float)
    if F.shape == (3, 4):
        F = np.vstack([F, [0, 0, 0, 1]])
    if F.shape != (4, 4) or not np.all(np.isfinite(F)) or abs(np.linalg.det(F[:3, :3])) < 1e-300:
        raise InputError("frame must be an invertible 4x4 affine matrix", field="frame")
    return F


class InverseThinPlateSpline(NumericalInverse):
    """Numerical inverse of a :class:`ThinPlateSpline`, solved per point by :mod:`atlasreg.transforms.inverse`.

    Starts from a spline fitted the other way and runs damped Newton on the
    forward spline's analytic Jacobian until ``|T(x) - y| <= tol``. Points that
    do not converge (where the spline folds) are NaN or raise
    :class:`~atlasreg.errors.ConvergenceError`, by ``on_fail``; ``last_report``
    counts them and ``last_residual`` is the worst residual of the points returned.
    """

    @staticmethod
    def default_tol(forward) -> float:
        return 1e-10 * (float(np.abs(forward.dst_points).max()) or 1.0)

    def __init__(self, forward: ThinPlateSpline, tol: float | None = None, max_iter: int = MAX_ITER,
                 on_fail: str = "nan"):
        super().__init__(forward, tol, max_iter, on_fail)
        self._guess = ThinPlateSpline(forward.dst_points, forward.src_points,
                                      regularization=max(forward.regularization, 1e-9),
                                      kernel=forward.kernel, src=forward.dst, dst=forward.src)

    def _solve(self, pts: np.ndarray):
        f = self.forward
        return solve_tps_inverse(f.frame, f._q, f._w, f._a, f._kernel_id, pts, self._guess._map(pts), self.tol,
                                 self.max_iter)

