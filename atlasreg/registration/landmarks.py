"""Landmark fitting: rigid, similarity, affine or thin-plate spline, chosen by cross-validation, robust to gross outliers.

:func:`fit_landmarks` returns an ordinary :class:`~atlasreg.transforms.Affine`
or :class:`~atlasreg.transforms.ThinPlateSpline` (so it is a SpaceGraph edge with
an inverse and can be saved like any transform) carrying a
:class:`LandmarkReport` as ``.report``.

How it fits (all in a well-conditioned normalised frame, whatever the units):

* Source points are converted to the destination's unit (an EM block in nm and
  a light-sheet frame in mm are fine) and centred/scaled.
* Every candidate model is scored by its exact leave-one-out (LOO) error:
  closed form for the affine (hat matrix), a vectorised downdate for rigid and
  similarity, and for the thin-plate spline the smoothing spline's
  leave-one-out identity ``e_i = w_i / [(I - H)/λ]_ii`` evaluated for a whole
  grid of λ from one eigendecomposition of the kernel matrix on the space
  orthogonal to the affine part. No smoothing is set by hand.
* The model (and λ, kernel) with the lowest mean LOO error wins; a simpler
  model is kept when a more complex one is not better by more than one
  standard error of the paired differences (small landmark sets).
* Robust mode: pairs whose held-out error exceeds ``median + k * 1.4826 * MAD``
  of the kept pairs' held-out errors are set aside, the model refitted, and
  the test repeated for every pair (a pair set aside earlier comes back if the
  cleaner fit predicts it well) until the set is stable.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from ..errors import InputError
from ..spaces import Space, as_space, unit_scale
from ..transforms.base import Affine, Transform, as_points
from ..transforms.fitting import fit_linear, procrustes
from ..transforms.tps import KERNELS, ThinPlateSpline, kernel_matrix, normalising_frame

log = logging.getLogger(__name__)

MODELS = ("rigid", "similarity", "affine", "tps")
_COMPLEXITY = {"rigid": 0, "similarity": 1, "affine": 2, "tps": 3}
_MIN_PAIRS = {"rigid": 3, "similarity": 3, "affine": 4, "tps": 5}
#: λ grid searched for the thin-plate spline (normalised frame; 0 interpolates exactly).
DEFAULT_LAMBDAS = np.concatenate([[0.0], np.logspace(-6, 2, 25)])
DEFAULT_KERNELS = ("r", "r2logr")


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------
@dataclass
class LandmarkReport:
    """What a landmark fit did and how well it predicts held-out landmarks.

    Errors are Euclidean distances in the destination unit (``dst_unit``);
    ``*_um`` properties give them in micrometres.

    Attributes
    ----------
    model, kernel, regularization
        The chosen model (``"rigid"``, ``"similarity"``, ``"affine"``, ``"tps"``),
        the spline kernel and λ (``None`` for linear models).
    cv : str
        How held-out errors were measured (``"leave-one-out"``).
    cv_median, cv_p95, cv_mean, cv_max : float
        Held-out error statistics over the pairs used in the final fit.
    heldout : (N,) array
        Held-out error of every input pair: its leave-one-out error for used
        pairs, and for rejected pairs the error of the final fit (which never
        saw them).
    residuals : (N,) array
        In-sample error of the final fit at every pair (0 for an interpolating spline).
    rejected : (R,) int array
        Indices (into the input) of pairs flagged as gross outliers and left out.
    names : list of str or None
        Landmark names, when given (``rejected_names`` lists the rejected ones).
    candidates : list of dict
        Every model tried on the final set of pairs with its LOO median / p95 / mean.
    outlier_threshold : float
        Held-out error above which a pair was rejected (NaN when ``robust=False``).
    """

    model: str
    kernel: str | None
    regularization: float | None
    src_unit: str
    dst_unit: str
    cv_median: float
    cv_p95: float
    cv_mean: float
    cv_max: float
    heldout: np.ndarray
    residuals: np.ndarray
    rejected: np.ndarray
    n_pairs: int
    candidates: list = field(default_factory=list)
    names: list | None = None
    outlier_threshold: float = float("nan")
    iterations: int = 1
    cv: str = "leave-one-out"
    notes: list = field(default_factory=list)

    @property
    def n_used(self) -> int:
        return self.n_pairs - len(self.rejected)

    @property
    def _um(self) -> float:
        return unit_scale(self.dst_unit, "um")

    @property
    def cv_median_um(self) -> float:
        return self.cv_median * self._um

    @property
    def cv_p95_um(self) -> float:
        return self.cv_p95 * self._um

    @property
    def cv_mean_um(self) -> float:
        return self.cv_mean * self._um

    @property
    def rejected_names(self) -> list:
        if self.names is None:
            return [str(i) for i in self.rejected]
        return [self.names[i] for i in self.rejected]

    def summary(self) -> str:
        """A few human-readable lines."""
        u = self.dst_unit
        mdl = self.model if self.model != "tps" else (
            f"tps (kernel {self.kernel}, λ={self.regularization:.3g})")
        def um(v):
            return "" if u == "um" else f" ({v * self._um:.4g} µm)"

        lines = [
            f"model: {mdl}  [{self.src_unit} -> {u}]",
            f"held-out ({self.cv}) error over {self.n_used} pairs: median {self.cv_median:.4g} {u}"
            f"{um(self.cv_median)}, p95 {self.cv_p95:.4g} {u}{um(self.cv_p95)}, max {self.cv_max:.4g} {u}",
        ]
        if len(self.rejected):
            shown = ", ".join(self.rejected_names[:20]) + (" ..." if len(self.rejected) > 20 else "")
            lines.append(f"rejected {len(self.rejected)} of {self.n_pairs} pairs as gross outliers "
                         f"(held-out error > {self.outlier_threshold:.4g} {u}): {shown}")
        elif np.isfinite(self.outlier_threshold):
            lines.append(f"no outliers (threshold {self.outlier_threshold:.4g} {u})")
        best = {}
        for c in self.candidates:
            key = c["model"] if c["model"] != "tps" else f"tps/{c['kernel']}"
            if key not in best or c["cv_mean"] < best[key]["cv_mean"]:
                best[key] = c
        lines.append("candidates (best of each, LOO median / p95):")
        for key, c in best.items():
            lam = f" λ={c['regularization']:.3g}" if c["regularization"] is not None else ""
            lines.append(f"  {key:<12}{lam:<12} {c['cv_median']:.4g} / {c['cv_p95']:.4g} {u}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-serialisable dictionary (round-trips through :meth:`from_dict`)."""
        return {
            "model": self.model, "kernel": self.kernel, "regularization": self.regularization,
            "src_unit": self.src_unit, "dst_unit": self.dst_unit, "cv": self.cv,
            "cv_median": self.cv_median, "cv_p95": self.cv_p95, "cv_mean": self.cv_mean,
            "cv_max": self.cv_max, "cv_median_um": self.cv_median_um, "cv_p95_um": self.cv_p95_um,
            "n_pairs": self.n_pairs, "n_used": self.n_used,
            "rejected": [int(i) for i in self.rejected], "rejected_names": self.rejected_names,
            "outlier_threshold": None if not np.isfinite(self.outlier_threshold) else self.outlier_threshold,
            "iterations": self.iterations,
            "heldout": [float(v) for v in self.heldout], "residuals": [float(v) for v in self.residuals],
            "names": self.names, "candidates": self.candidates, "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LandmarkReport":
        thr = d.get("outlier_threshold")
        return cls(model=d["model"], kernel=d.get("kernel"), regularization=d.get("regularization"),
                   src_unit=d["src_unit"], dst_unit=d["dst_unit"], cv_median=d["cv_median"],
                   cv_p95=d["cv_p95"], cv_mean=d["cv_mean"], cv_max=d["cv_max"],
                   heldout=np.asarray(d["heldout"], float), residuals=np.asarray(d["residuals"], float),
                   rejected=np.asarray(d["rejected"], int), n_pairs=d["n_pairs"],
                   candidates=list(d.get("candidates", [])), names=d.get("names"),
                   outlier_threshold=float("nan") if thr is None else float(thr),
                   iterations=d.get("iterations", 1), cv=d.get("cv", "leave-one-out"),
                   notes=list(d.get("notes", [])))


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
def _label(i: int, names) -> str:
    return f"row {i}" + (f" ({names[i]})" if names is not None else "")


def _check_pairs(s: np.ndarray, d: np.ndarray, names) -> None:
    if len(s) != len(d):
        raise InputError(f"{len(s)} source points but {len(d)} destination points: landmarks come in pairs",
                         field="points")
    bad = np.flatnonzero(~(np.isfinite(s).all(1) & np.isfinite(d).all(1)))
    if bad.size:
        shown = ", ".join(_label(i, names) for i in bad[:5])
        raise InputError(f"{bad.size} landmark pair(s) contain NaN or inf: {shown}"
                         f"{' ...' if bad.size > 5 else ''}; remove or fix them", field="points")
    for arr, side in ((s, "source"), (d, "destination")):
        _, first, inv, counts = np.unique(arr, axis=0, return_index=True, return_inverse=True,
                                          return_counts=True)
        if (counts > 1).any():
            g = int(np.flatnonzero(counts > 1)[0])
            rows = np.flatnonzero(inv.ravel() == g)
            raise InputError(
                f"duplicate {side} landmarks: {' and '.join(_label(i, names) for i in rows[:4])} have the "
                f"same {side} position {arr[rows[0]].tolist()}; a map cannot send one point to two places "
                "(or two points to one): remove the duplicate", field="points")


def _spread_rank(x: np.ndarray) -> int:
    """Number of independent directions the points span (relative tolerance 1e-6)."""
    if len(x) < 2:
        return 0
    sv = np.linalg.svd(x - x.mean(0), compute_uv=False)
    if sv[0] == 0:
        return 0
    return int((sv > 1e-6 * sv[0]).sum())


# ----------------------------------------------------------------------------------------------
# Linear models: fits and exact leave-one-out
# ----------------------------------------------------------------------------------------------
def _loo_linear(s: np.ndarray, d: np.ndarray, model: str) -> np.ndarray | None:
    """Exact leave-one-out predictions (N, 3) of a linear model, or None if undefined."""
    N = len(s)
    if N - 1 < _MIN_PAIRS[model]:
        return None
    if model == "affine":
        X = np.hstack([np.ones((N, 1)), s])
        XtX_inv = np.linalg.pinv(X.T @ X)
        h = np.einsum("ij,jk,ik->i", X, XtX_inv, X)
        if np.any(h > 1 - 1e-9):
            return None  # a pair is needed to determine the fit: LOO undefined
        beta = XtX_inv @ X.T @ d
        r = d - X @ beta
        return d - r / (1 - h)[:, None]
    # Rigid / similarity: downdate sums to get every leave-one-out fit at once.
    Ss, Sd = s.sum(0), d.sum(0)
    cs = (Ss[None] - s) / (N - 1)
    cd = (Sd[None] - d) / (N - 1)
    C = d.T @ s
    cov = C[None] - d[:, :, None] * s[:, None, :] - (N - 1) * cd[:, :, None] * cs[:, None, :]
    var_s = (s ** 2).sum() - (s ** 2).sum(1) - (N - 1) * (cs ** 2).sum(1)
    R, scale = procrustes(cov, var_s, model)
    A = scale[:, None, None] * R
    t = cd - np.einsum("nij,nj->ni", A, cs)
    return np.einsum("nij,nj->ni", A, s) + t


# ----------------------------------------------------------------------------------------------
# Thin-plate spline: held-out errors for a whole λ grid from one eigendecomposition
# ----------------------------------------------------------------------------------------------
class _SplineCV:
    """Smoothing spline ``(K + λI) w + P a = y, Pᵀw = 0`` on the centres ``q``, for many λ.

    With ``P = [Q1 Q2] R`` and ``Q2ᵀ K Q2 = V diag(e) Vᵀ``, ``U = Q2 V`` and
    ``G = U diag(1/(e+λ)) Uᵀ``: the weights are ``w = G y`` and ``I - H = λ G``.
    The leave-out lemma of smoothing splines (the fit without a set S equals
    the full fit to data whose S entries are replaced by that fit's own
    predictions) then gives exact held-out errors without refitting, also at
    λ = 0:

    * leave-one-out: ``e_i = w_i / G_ii``;
    * leaving out a set S: ``e_S = G_SS⁻¹ w_S`` and, for every other pair,
      leaving out S and i: ``e_i = (w_i - G_iS G_SS⁻¹ w_S) / (G_ii - G_iS G_SS⁻¹ G_Si)``.

    So outliers can be set aside and every λ re-scored for the cost of a few
    matrix products, never a new eigendecomposition.
    """

    def __init__(self, q: np.ndarray, kernel: str):
        N = len(q)
        P = np.hstack([np.ones((N, 1)), q])
        Q, R = np.linalg.qr(P, mode="complete")
        self.Q1, self.R1 = Q[:, :4], R[:4]
        Q2 = Q[:, 4:]
        self.K = kernel_matrix(q, q, kernel)
        B = Q2.T @ self.K @ Q2
        # numpy's eigh (LAPACK syevd) is the fastest full symmetric eigensolver available here.
        e, V = np.linalg.eigh((B + B.T) / 2)
        # Conditionally positive definite kernels give e > 0; clip round-off.
        self.e = np.maximum(e, 1e-14 * max(float(e.max()), 1e-300))
        self.U = Q2 @ V
        self.U2 = self.U ** 2

    def heldout_residuals(self, y: np.ndarray, lam: float, out: np.ndarray | None = None) -> np.ndarray:
        """Residual vectors ``y_i - f_{-i}(x_i)`` (N, 3): leave-one-out, or with the set ``out`` also left out."""
        inv = 1.0 / (self.e + lam)
        w = self.U @ ((self.U.T @ y) * inv[:, None])
        g = self.U2 @ inv
        S = np.flatnonzero(out) if out is not None else np.array([], int)
        if S.size == 0:
            return w / g[:, None]
        GS = (self.U[S] * inv) @ self.U.T  # rows S of G, (|S|, N)
        GSS = GS[:, S]
        try:
            cf = scipy.linalg.cho_factor(GSS, check_finite=False)
            eS = scipy.linalg.cho_solve(cf, w[S], check_finite=False)
            A = scipy.linalg.cho_solve(cf, GS, check_finite=False)
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            eS = np.linalg.lstsq(GSS, w[S], rcond=None)[0]
            A = np.linalg.lstsq(GSS, GS, rcond=None)[0]
        num = w - GS.T @ eS
        den = g - (GS * A).sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            res = num / den[:, None]
        res[S] = eS
        return res

    def solve(self, y: np.ndarray, lam: float):
        """Weights (N, 3) and affine coefficients (4, 3) of the fit to all centres."""
        inv = 1.0 / (self.e + lam)
        w = self.U @ ((self.U.T @ y) * inv[:, None])
        rhs = y - self.K @ w - lam * w
        a = scipy.linalg.solve_triangular(self.R1, self.Q1.T @ rhs)
        return w, a


# ----------------------------------------------------------------------------------------------
# Candidates, selection, final transform
# ----------------------------------------------------------------------------------------------
@dataclass
class _Choice:
    model: str
    kernel: str | None
    lam: float | None
    heldout: np.ndarray  # (N,) held-out error of every pair (LOO for kept pairs, fit-without-them for others)
    keep: np.ndarray     # (N,) bool: pairs the fit uses

    @property
    def errors(self) -> np.ndarray:
        return self.heldout[self.keep]


class _Frame:
    """Normalisation for linear fits: src converted to the dst unit, both centred, one common scale."""

    def __init__(self, s_raw: np.ndarray, d: np.ndarray, u: float):
        self.u = u
        s = s_raw * u
        self.cs, self.cd = s.mean(0), d.mean(0)
        self.k = float(np.sqrt(((d - self.cd) ** 2).sum(1).mean())) or float(
            np.sqrt(((s - self.cs) ** 2).sum(1).mean())) or 1.0

    def src(self, s_raw):
        return (s_raw * self.u - self.cs) / self.k

    def dst(self, d):
        return (d - self.cd) / self.k

    def to_matrix(self, An: np.ndarray) -> np.ndarray:
        """Physical 4x4 (src unit -> dst unit) from a normalised (3, 4) fit."""
        A = An[:, :3]
        m = np.eye(4)
        m[:3, :3] = A * self.u
        m[:3, 3] = self.cd + self.k * An[:, 3] - A @ self.cs
        return m


def _linear_matrix(s_raw, d, u, model) -> np.ndarray:
    fr = _Frame(s_raw, d, u)
    return fr.to_matrix(fit_linear(fr.src(s_raw), fr.dst(d), model)[:3])


def _linear_choice(s_raw, d, u, model, keep) -> _Choice | None:
    idx = np.flatnonzero(keep)
    fr = _Frame(s_raw[idx], d[idx], u)
    pred = _loo_linear(fr.src(s_raw[idx]), fr.dst(d[idx]), model)
    if pred is None:
        return None
    heldout = np.empty(len(s_raw))
    heldout[idx] = np.linalg.norm(fr.cd + fr.k * pred - d[idx], axis=1)
    out = np.flatnonzero(~keep)
    if out.size:
        m = fr.to_matrix(fit_linear(fr.src(s_raw[idx]), fr.dst(d[idx]), model)[:3])
        heldout[out] = np.linalg.norm(s_raw[out] @ m[:3, :3].T + m[:3, 3] - d[out], axis=1)
    return _Choice(model, None, None, heldout, keep.copy())


def _spline_frame(s_raw, d, u) -> np.ndarray:
    """Kernel frame: source through its affine fit to the destination, centred, unit RMS radius."""
    try:
        L = _linear_matrix(s_raw, d, u, "affine")[:3, :3]
        if not np.isfinite(L).all() or np.linalg.cond(L) > 1e8:
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        L = np.eye(3) * u
    return normalising_frame(s_raw, L)


def _select(choices: list[_Choice]) -> _Choice:
    """Lowest mean held-out error; a simpler model family is kept unless beaten by more than one standard error."""
    best = min(choices, key=lambda c: c.errors.mean())
    n = len(best.errors)
    for c in sorted(choices, key=lambda c: (_COMPLEXITY[c.model], c.errors.mean())):
        if _COMPLEXITY[c.model] >= _COMPLEXITY[best.model]:
            break
        diff = c.errors - best.errors
        se = diff.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
        if diff.mean() <= se:
            return c
    return best


def _rows(choices, chosen) -> list[dict]:
    rows = []
    for c in choices:
        e = c.errors
        rows.append({"model": c.model, "kernel": c.kernel, "regularization": c.lam,
                     "cv_median": float(np.median(e)), "cv_p95": float(np.percentile(e, 95)),
                     "cv_mean": float(e.mean()), "selected": c is chosen})
    return rows


def _threshold(errors: np.ndarray, k: float) -> float:
    med = float(np.median(errors))
    mad = 1.4826 * float(np.median(np.abs(errors - med)))
    return med + k * max(mad, 1e-9 * max(med, 1e-300))


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------
def fit_landmarks(src_points, dst_points=None, model: str = "auto", src: Space | str | None = None,
                  dst: Space | str | None = None, regularization: float | None = None,
                  kernel: str | None = None, robust: bool = True, outlier_k: float = 6.0,
                  max_iter: int = 10, names=None, lambdas=None) -> Transform:
    """Fit a transform from landmark pairs, choosing model and smoothing by leave-one-out cross-validation.

    Parameters
    ----------
    src_points, dst_points : (N, 3) arrays
        Corresponding points, each in its space's unit. ``src_points`` may
        instead be a :class:`atlasreg.io.landmarks.LandmarkPairs` (from
        :func:`atlasreg.io.landmarks.read_landmarks`), which carries points,
        spaces and names; then leave ``dst_points`` out.
    model : {"auto", "rigid", "similarity", "affine", "tps"}
        ``"auto"`` tries all that the number and spread of landmarks allow.
    src, dst : Space or str
        The spaces (and so the units) of the two point sets. Required; a bare
        name means micrometres. Points in different units are fine.
    regularization : float, optional
        Spline smoothing λ (normalised frame). Default: chosen by
        cross-validation from :data:`DEFAULT_LAMBDAS` (or ``lambdas``).
    kernel : {"r", "r2logr", "r3"}, optional
        Spline kernel; default: cross-validation chooses between ``"r"`` (3-D
        thin plate) and ``"r2logr"``.
    robust : bool
        Find, report and leave out gross outliers (default True).
    outlier_k : float
        A pair is an outlier when its held-out error exceeds
        ``median + outlier_k * 1.4826 * MAD`` of the kept pairs' held-out errors.
    max_iter : int
        Most rounds of the outlier test.
    names : sequence of str, optional
        Landmark names used in messages and the report.
    lambdas : sequence of float, optional
        λ grid to search instead of :data:`DEFAULT_LAMBDAS`.

    Returns
    -------
    Transform
        An :class:`~atlasreg.transforms.Affine` or
        :class:`~atlasreg.transforms.ThinPlateSpline` from ``src`` to ``dst``
        (a SpaceGraph edge with ``.inverse()``), with ``.report``
        (:class:`LandmarkReport`): held-out median / p95 error, residual per
        landmark, rejected pairs, every candidate's CV error.

    Raises
    ------
    InputError
        Mismatched lengths, NaN/inf, duplicate points, too few pairs for the
        model, collinear/coplanar points where a model needs 3-D spread, missing spaces.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> em = rng.uniform(0, 2e5, (40, 3))                       # nm
    >>> lm = em * 1e-6 * 1.1 + 0.01 * np.sin(em / 5e4)          # mm, mildly nonlinear
    >>> T = fit_landmarks(em, lm, src=Space("em", "nm"), dst=Space("lm", "mm"))
    >>> T.report.model, T.src.unit, T.dst.unit
    ('tps', 'nm', 'mm')
    >>> bool(T.report.cv_median_um < 3.0)
    True
    """
    if dst_points is None and hasattr(src_points, "src_points") and hasattr(src_points, "dst_points"):
        pairs = src_points
        src_points, dst_points = pairs.src_points, pairs.dst_points
        src = pairs.src if src is None else src
        dst = pairs.dst if dst is None else dst
        names = getattr(pairs, "names", None) if names is None else names
    if dst_points is None:
        raise InputError("fit_landmarks needs dst_points (or a LandmarkPairs as the first argument)",
                         field="dst_points")
    if src is None or dst is None:
        raise InputError("say which spaces (and so which units) the landmarks are in: "
                         "fit_landmarks(..., src=Space('em', 'nm'), dst=Space('lm', 'mm'))",
                         field="src" if src is None else "dst")
    src, dst = as_space(src), as_space(dst)
    if src.name == dst.name:
        raise InputError(f"src and dst are both named {src.name!r}; give the two spaces different names",
                         field="dst")
    s_raw = as_points(src_points, "src_points")
    d = as_points(dst_points, "dst_points")
    names = None if names is None else [str(n) for n in names]
    if names is not None and len(names) != len(s_raw):
        raise InputError(f"{len(names)} names for {len(s_raw)} landmarks", field="names")
    _check_pairs(s_raw, d, names)
    N = len(s_raw)
    if model != "auto" and model not in MODELS:
        raise InputError(f"unknown model {model!r}; use 'auto' or one of {MODELS}", field="model")
    if kernel is not None and kernel not in KERNELS:
        raise InputError(f"unknown kernel {kernel!r}; use one of {KERNELS}", field="kernel")
    if regularization is not None and (not np.isfinite(regularization) or regularization < 0):
        raise InputError("regularization must be a finite number >= 0 (or None to choose it by "
                         "cross-validation)", field="regularization")
    lambdas = DEFAULT_LAMBDAS if lambdas is None else np.asarray(lambdas, float).ravel()
    if regularization is not None:
        lambdas = np.array([float(regularization)])
    if lambdas.size == 0 or not np.all(np.isfinite(lambdas)) or np.any(lambdas < 0):
        raise InputError("lambdas must be finite numbers >= 0", field="lambdas")
    u = unit_scale(src.unit, dst.unit)
    notes: list[str] = []

    rank = _spread_rank(s_raw * u)
    if rank < 2:
        raise InputError(f"the {N} source landmarks are collinear (or all the same point): no 3-D "
                         "transform is determined; add landmarks off the line", field="points")
    if model == "auto":
        models = [m for m in MODELS if N - 1 >= _MIN_PAIRS[m]]
        if rank < 3 and any(m in ("affine", "tps") for m in models):
            models = [m for m in models if m not in ("affine", "tps")]
            notes.append("source landmarks are coplanar: affine and spline models are not determined "
                         "and were not tried")
        if not models:
            raise InputError(f"{N} landmark pairs are too few to choose a model by cross-validation: at "
                             "least 4 are needed (rigid/similarity), 5 for affine, 6 for a spline; or name "
                             "a model explicitly", field="points")
    else:
        if N < _MIN_PAIRS[model]:
            raise InputError(f"a {model} fit needs at least {_MIN_PAIRS[model]} landmark pairs, got {N}",
                             field="points")
        if rank < 3 and model in ("affine", "tps"):
            raise InputError(f"source landmarks are coplanar: a {model} map is not determined "
                             "(use rigid or similarity, or add landmarks off the plane)", field="points")
        models = [model]
    kernels = [kernel] if kernel is not None else list(DEFAULT_KERNELS)

    # Spline bases on all pairs, once: later rounds leave outliers out algebraically.
    splines: dict[str, _SplineCV] = {}
    F = None
    if "tps" in models and N - 1 >= _MIN_PAIRS["tps"]:
        F = _spline_frame(s_raw, d, u)
        q = s_raw @ F[:3, :3].T + F[:3, 3]
        for k in kernels:
            splines[k] = _SplineCV(q, k)

    keep = np.ones(N, bool)
    thr = float("nan")
    it = 0
    lam_grid = {k: lambdas for k in splines}
    while True:
        it += 1
        choices = [c for m in models if m != "tps"
                   if (c := _linear_choice(s_raw, d, u, m, keep)) is not None]
        out = None if keep.all() else ~keep
        for k, grid in lam_grid.items():
            for lam in grid:
                res = splines[k].heldout_residuals(d, float(lam), out)
                choices.append(_Choice("tps", k, float(lam), np.linalg.norm(res, axis=1), keep.copy()))
        choices = [c for c in choices if np.all(np.isfinite(c.errors))]
        if not choices:
            break
        chosen = _select(choices)
        if not robust or keep.sum() < 8:
            if robust:
                notes.append("fewer than 8 pairs: too few to tell outliers from the spread; none rejected")
            break
        thr = _threshold(chosen.errors, outlier_k)
        new_keep = chosen.heldout <= thr
        if new_keep.sum() < max(_MIN_PAIRS[chosen.model] + 2, int(np.ceil(0.5 * N))):
            notes.append("the outlier test would reject half the pairs or more (the model does not fit "
                         "them well): nothing rejected")
            thr = float("nan")
            if keep.all():
                break
            keep[:] = True
            robust = False  # one last round on every pair
            continue
        if np.array_equal(new_keep, keep) or it >= max_iter:
            break
        if it >= 2 and chosen.model == "tps":
            # Once outliers are out, λ and the kernel settle: search near the choice only (each
            # round with pairs left out costs O(N² · #left out) per λ).
            j = int(np.argmin(np.abs(lambdas - chosen.lam)))
            lam_grid = {chosen.kernel: lambdas[max(0, j - 3): j + 4]}
        keep = new_keep

    idx = np.flatnonzero(keep)
    if not choices:
        # Exactly the minimum number of pairs for the named model: a fit, but nothing to hold out.
        notes.append(f"{N} pairs are the minimum for a {models[0]} fit: no held-out error can be measured "
                     "and no outliers detected")
        chosen = _Choice(models[0], kernels[0] if models[0] == "tps" else None,
                         float(lambdas[0]) if models[0] == "tps" else None, np.full(N, np.nan), keep)
        rows = []
    else:
        rows = _rows(choices, chosen)
    if chosen.model == "tps":
        if keep.all() and chosen.kernel in splines:
            w, a = splines[chosen.kernel].solve(d, chosen.lam)
            T = ThinPlateSpline.from_solution(s_raw, d, w, a, chosen.lam, chosen.kernel, F, src=src, dst=dst)
        else:
            T = ThinPlateSpline(s_raw[idx], d[idx], chosen.lam, chosen.kernel, src=src, dst=dst,
                                frame=F if F is not None else _spline_frame(s_raw, d, u))
    else:
        T = Affine(_linear_matrix(s_raw[idx], d[idx], u, chosen.model), src, dst)

    heldout = chosen.heldout
    used = heldout[idx]
    ok = np.all(np.isfinite(used)) and used.size > 0
    residuals = np.linalg.norm(T.map_points(s_raw) - d, axis=1)
    report = LandmarkReport(
        model=chosen.model, kernel=chosen.kernel, regularization=chosen.lam, src_unit=src.unit,
        dst_unit=dst.unit,
        cv_median=float(np.median(used)) if ok else float("nan"),
        cv_p95=float(np.percentile(used, 95)) if ok else float("nan"),
        cv_mean=float(used.mean()) if ok else float("nan"),
        cv_max=float(used.max()) if ok else float("nan"),
        heldout=heldout, residuals=residuals, rejected=np.flatnonzero(~keep), n_pairs=N, candidates=rows,
        names=names, outlier_threshold=thr, iterations=it, notes=notes)
    T.report = report
    log.info("landmark fit %s -> %s, %s: %s", src.name, dst.name, chosen.model, report.summary().splitlines()[1])
    return T
