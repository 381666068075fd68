"""Thin-plate spline transforms fitted to landmark pairs."""
from __future__ import annotations

import numba as nb
import numpy as np

from ..errors import InputError
from .base import Transform, as_points

KERNELS = ("r", "r2logr", "r3")


@nb.njit(parallel=True, cache=True, nogil=True)
def _tps_eval(q, centres, weights, affine, kernel, out):
    # q, centres in normalised coordinates; out = affine part + sum_k w_k U(|q - c_k|)
    n = q.shape[0]
    m = centres.shape[0]
    for i in nb.prange(n):
        x = q[i, 0]
        y = q[i, 1]
        z = q[i, 2]
        o0 = affine[0, 0] + affine[1, 0] * x + affine[2, 0] * y + affine[3, 0] * z
        o1 = affine[0, 1] + affine[1, 1] * x + affine[2, 1] * y + affine[3, 1] * z
        o2 = affine[0, 2] + affine[1, 2] * x + affine[2, 2] * y + affine[3, 2] * z
        for k in range(m):
            dx = x - centres[k, 0]
            dy = y - centres[k, 1]
            dz = z - centres[k, 2]
            r2 = dx * dx + dy * dy + dz * dz
            if kernel == 0:
                u = np.sqrt(r2)
            elif kernel == 1:
                u = 0.5 * r2 * np.log(r2) if r2 > 0 else 0.0
            else:
                u = r2 * np.sqrt(r2)
            o0 += weights[k, 0] * u
            o1 += weights[k, 1] * u
            o2 += weights[k, 2] * u
        out[i, 0] = o0
        out[i, 1] = o1
        out[i, 2] = o2


def _kernel_matrix(a: np.ndarray, b: np.ndarray, kernel: str) -> np.ndarray:
    r2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    if kernel == "r":
        return np.sqrt(r2)
    if kernel == "r3":
        return r2 * np.sqrt(r2)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 0.5 * r2 * np.log(r2)
    u[r2 == 0] = 0.0
    return u


class ThinPlateSpline(Transform):
    """Thin-plate spline from ``src`` landmarks onto ``dst`` landmarks.

    Parameters
    ----------
    src_points, dst_points : (M, 3) arrays
        Landmark pairs, each in its space's unit.
    regularization : float
        Smoothing λ (0 interpolates the landmarks exactly). It is applied in
        normalised coordinates (landmarks centred and scaled to unit RMS
        radius), so one value means the same across units.
    kernel : {"r", "r2logr", "r3"}
        Radial basis: ``r`` is the biharmonic 3-D thin-plate kernel.

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
                 src="src", dst="dst"):
        super().__init__(src, dst)
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
        if regularization < 0:
            raise InputError("regularization must be >= 0", field="regularization")
        if len(np.unique(np.round(s, 12), axis=0)) < len(s) and regularization == 0:
            raise InputError("duplicate source landmarks: an interpolating spline is undefined "
                             "(remove duplicates or set regularization > 0)", field="points")
        self.src_points, self.dst_points = s, d
        self.regularization = float(regularization)
        self.kernel = kernel
        self._center = s.mean(0)
        self._scale = float(np.sqrt(((s - self._center) ** 2).sum(1).mean())) or 1.0
        q = (s - self._center) / self._scale
        P = np.hstack([np.ones((len(q), 1)), q])
        if np.linalg.matrix_rank(P) < 4:
            raise InputError("source landmarks are coplanar or collinear: a 3-D spline is not determined",
                             field="points")
        M = len(q)
        A = np.zeros((M + 4, M + 4))
        A[:M, :M] = _kernel_matrix(q, q, kernel) + self.regularization * np.eye(M)
        A[:M, M:] = P
        A[M:, :M] = P.T
        b = np.zeros((M + 4, 3))
        b[:M] = d
        try:
            sol = np.linalg.solve(A, b)
        except np.linalg.LinAlgError:
            sol = np.linalg.lstsq(A, b, rcond=None)[0]
        self._q = np.ascontiguousarray(q)
        self._w = np.ascontiguousarray(sol[:M])
        self._a = np.ascontiguousarray(sol[M:])  # rows: constant, x, y, z
        self._kernel_id = KERNELS.index(kernel)

    def _map(self, pts: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray((pts - self._center) / self._scale)
        out = np.empty_like(q)
        _tps_eval(q, self._q, self._w, self._a, self._kernel_id, out)
        out[~np.all(np.isfinite(pts), axis=1)] = np.nan
        return out

    @property
    def linear_part(self) -> np.ndarray:
        """3x3 matrix of the spline's affine part in physical units."""
        return self._a[1:].T / self._scale

    def _inverse(self) -> "InverseThinPlateSpline":
        return InverseThinPlateSpline(self)


class InverseThinPlateSpline(Transform):
    """Numerical inverse of a :class:`ThinPlateSpline` (Newton-like iteration per point).

    Starts from a spline fitted the other way and corrects with the forward
    map's affine part until ``|T(x) - y| < tol``; ``last_residual`` reports the
    largest remaining error of the last call.
    """

    def __init__(self, forward: ThinPlateSpline, tol: float | None = None, max_iter: int = 100):
        super().__init__(forward.dst, forward.src)
        self.forward = forward
        scale = float(np.abs(forward.dst_points).max()) or 1.0
        self.tol = tol if tol is not None else 1e-10 * scale
        self.max_iter = max_iter
        self.last_residual = float("nan")
        self._explicit_inverse = forward
        self._guess = ThinPlateSpline(forward.dst_points, forward.src_points,
                                      regularization=max(forward.regularization, 1e-9),
                                      kernel=forward.kernel, src=forward.dst, dst=forward.src)
        self._Ainv = np.linalg.inv(forward.linear_part)

    def _map(self, pts: np.ndarray) -> np.ndarray:
        x = self._guess._map(pts)
        active = np.all(np.isfinite(pts), axis=1)
        res = np.full(len(pts), np.nan)
        for _ in range(self.max_iter):
            if not active.any():
                break
            err = self.forward._map(x[active]) - pts[active]
            r = np.sqrt((err ** 2).sum(1))
            res[active] = r
            x[active] = x[active] - err @ self._Ainv.T
            idx = np.flatnonzero(active)
            active[idx[r <= self.tol]] = False
        if active.any():
            err = self.forward._map(x[active]) - pts[active]
            res[active] = np.sqrt((err ** 2).sum(1))
        finite = res[np.isfinite(res)]
        self.last_residual = float(finite.max()) if finite.size else float("nan")
        return x

    def _inverse(self) -> ThinPlateSpline:
        return self.forward
