"""Closed-form least-squares fits of linear maps between point pairs."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..spaces import as_points

_MIN_PAIRS = {"translation": 1, "rigid": 3, "similarity": 3, "affine": 4}


def fit_linear(src_points, dst_points, model: str = "affine", weights=None) -> np.ndarray:
    """Return the 4x4 matrix of the least-squares ``model`` map taking ``src_points`` to ``dst_points``.

    ``model`` is ``"translation"``, ``"rigid"``, ``"similarity"`` (Umeyama's
    closed form, no reflections) or ``"affine"``.

    Examples
    --------
    >>> src = np.random.default_rng(0).normal(size=(10, 3))
    >>> m = fit_linear(src, 2 * src + 1, "similarity")
    >>> np.allclose(m[:3, :3], 2 * np.eye(3)), np.allclose(m[:3, 3], 1)
    (True, True)
    """
    s = as_points(src_points, "src_points")
    d = as_points(dst_points, "dst_points")
    if model not in _MIN_PAIRS:
        raise InputError(f"unknown linear model {model!r}; use one of {sorted(_MIN_PAIRS)}", field="model")
    if len(s) != len(d):
        raise InputError(f"{len(s)} source points but {len(d)} destination points", field="points")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(d))):
        raise InputError("landmarks contain NaN or inf", field="points")
    if len(s) < _MIN_PAIRS[model]:
        raise InputError(
            f"a {model} fit needs at least {_MIN_PAIRS[model]} point pairs, got {len(s)}", field="points"
        )
    w = np.ones(len(s)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    cs = w @ s
    cd = w @ d
    s0, d0 = s - cs, d - cd
    m = np.eye(4)
    if model == "translation":
        m[:3, 3] = cd - cs
        return m
    if model == "affine":
        rank = np.linalg.matrix_rank(s0 * np.sqrt(w)[:, None], tol=1e-9 * max(1.0, np.abs(s0).max()))
        if rank < 3:
            raise InputError(
                "source points are coplanar or collinear: an affine fit is not determined "
                "(use rigid/similarity, or add points off the plane)", field="points")
        sw = s0 * np.sqrt(w)[:, None]
        dw = d0 * np.sqrt(w)[:, None]
        A, *_ = np.linalg.lstsq(sw, dw, rcond=None)
        m[:3, :3] = A.T
    else:
        cov = (d0 * w[:, None]).T @ s0
        S = np.linalg.svd(cov, compute_uv=False)
        if S[1] < 1e-12 * max(S[0], 1e-300):
            raise InputError("points are collinear: rotation is not determined", field="points")
        R, scale = procrustes(cov, float(w @ np.sum(s0 ** 2, axis=1)), model)
        m[:3, :3] = float(scale) * R
    m[:3, 3] = cd - m[:3, :3] @ cs
    return m


def procrustes(cov: np.ndarray, var_s, model: str):
    """Rotation (and similarity scale) from cross-covariance(s) ``cov`` (..., 3, 3): Umeyama, no reflection.

    ``cov = sum w (d - cd)(s - cs)^T`` and ``var_s = sum w |s - cs|^2`` (the same weights); batched over
    leading axes (the landmark fitter's leave-one-out fits). Returns ``(R, scale)``; scale is 1 unless
    ``model == "similarity"``.

    >>> R, k = procrustes(2 * np.eye(3), 1.0, "similarity")
    >>> bool(np.allclose(R, np.eye(3))), float(k)
    (True, 6.0)
    """
    U, S, Vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(U) * np.linalg.det(Vt))
    sign = np.where(sign == 0, 1.0, sign)
    D = np.ones(S.shape)
    D[..., 2] = sign
    R = (U * D[..., None, :]) @ Vt
    if model == "similarity":
        scale = (S * D).sum(-1) / var_s
    else:
        scale = np.ones(S.shape[:-1]) if S.ndim > 1 else 1.0
    return R, scale
