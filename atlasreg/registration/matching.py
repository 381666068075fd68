"""Matching of unpaired point sets: place an EM block in its light volume from cell positions alone.

:func:`match_landmarks` takes two unpaired clouds (e.g. every soma centroid of
an EM segmentation, in nm, and the cells a light-sheet or two-photon detector
found, in µm), finds which point corresponds to which, and fits the map with
:func:`~atlasreg.registration.landmarks.fit_landmarks` on the pairs it found.
No starting guess and no hand-picked pairs are needed.

How it works (all in micrometres, converted from the two spaces' units):

1. **Global search, no starting guess.** Every rotation is tried: the 24
   proper axis permutations with signs (the rotations of the cube), the 24
   mirrored ones (determinant -1), and ``n_rotations`` quasi-random rotations,
   each with and without a mirror. Each candidate (rotation, a scale from the
   clouds' spreads, centroids on centroids) is scored by a capped
   nearest-neighbour (chamfer) distance of a subsample: a density-shape
   comparison that tolerates missing and extra points. The best few distinct
   candidates (at least ``30°`` apart) are polished by a robust affine
   coherent-point-drift (soft assignment with an outlier weight, Gaussian
   width annealed from ~2.3 to ~0.4 soma spacings) and the one with the most
   points with a partner within 0.4 spacings wins.
2. **Non-rigid stage, tolerating points without partners on both sides.** An
   affine + Gaussian radial basis displacement field (centres on a grid,
   ridge-regularised) is fitted to CPD-style soft targets with an outlier
   weight, coarse to fine: the soft-assignment width shrinks with the grid
   spacing (about 12 to 3 soma spacings) so a local shift by one cell cannot
   lock in before the smooth large-scale warp is found. It runs from the best
   ``n_finalists`` global candidates (a near-symmetric block can leave rotations
   almost tied after the affine polish); the field claiming the most matched
   mass wins.
3. **Pairs and the final fit.** Mutual nearest neighbours under the field
   give pairs; :func:`fit_landmarks` (model, kernel and smoothing by
   leave-one-out cross-validation, gross outliers set aside) fits the
   transform on them; pairs are drawn again through that fit (mutual nearest
   neighbours within ``2 × p95`` of its held-out error) and the fit repeated.
   Each pair's confidence is its posterior probability under a Gaussian of the
   held-out error scale against every competing neighbour and the outlier
   term.
4. **Refusal.** If the held-out error of the fit is not far below the soma
   spacing (two unrelated clouds give errors near half the spacing, however
   many "pairs" one draws), or too few pairs are found, :class:`NoMatchError`
   is raised with the report instead of returning a confident transform.

Large blocks (more than ``LARGE`` = 5,000 points on each side, up to 10⁵ and
more) change step 1: over a block hundreds of soma spacings wide, the
rotation search of a subsample sees only the block's shape and density
layers, which place the cells to a few spacings at the edges (and tie
rotations by 90° or 180° about the block's axes), so no cell-level polish can
start from it. Each of 16 distinct candidates is instead aligned at the
shape level (affine CPD of subsamples of both clouds), then tested at 24
sub-blocks of 400 source cells spread over the block: the local offset left
is found by a vote over the offsets of every cell to every destination point
nearby, a local affine CPD at cell-level widths locks the sub-block in, and
the pairs of the sub-blocks that lock give a trimmed affine for step 2. A
wrong rotation locks nowhere (it is given up after 6 sub-blocks). Then a
sparse (truncated Gaussian) basis for the field, by fitting the field on a
random subset, and by a spatially stratified subset of at most
``max_fit_pairs`` pairs for the final spline; the pairs left out of that subset
give a true held-out error. All neighbour searches are scipy cKDTrees queried
in chunks.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ..errors import InputError, NoMatchError
from ..spaces import Space, unit_scale
from ..transforms.base import Affine, Transform, as_points
from ..transforms.fitting import fit_linear
from .landmarks import fit_landmarks

log = logging.getLogger(__name__)

MIN_POINTS = 10
#: above this many points on each side the global stage polishes its candidates by seeded sub-blocks
LARGE = 5000
_CHUNK = 50_000
#: (soft-assignment width σ, basis spacing h), both in soma spacings, coarse to fine.
SCHEDULE = ((0.58, 11.5), (0.46, 9.6), (0.38, 7.7), (0.31, 5.8), (0.23, 4.6), (0.19, 3.8), (0.15, 3.1),
            (0.135, 2.7))


# ----------------------------------------------------------------------------------------------
# The result
# ----------------------------------------------------------------------------------------------
@dataclass
class MatchResult:
    """What :func:`match_landmarks` found.

    Attributes
    ----------
    transform : Transform
        ``src -> dst`` (an :class:`~atlasreg.transforms.Affine` or
        :class:`~atlasreg.transforms.ThinPlateSpline` from :func:`fit_landmarks`,
        with its ``.report``): a :class:`~atlasreg.SpaceGraph` edge.
    pairs : (K, 2) int array
        Row indices ``(src_row, dst_row)`` of the matched points.
    confidence : (K,) float array
        Posterior probability (0-1) of each pair against its competing neighbours and the outlier term.
    residuals : (K,) float array
        Distance (destination unit) between each mapped source point and its partner.
    heldout_median, heldout_p95 : float
        Held-out error of the final fit (destination unit): leave-one-out over the pairs it used, or, for large
        sets, the error at matched pairs left out of the fit.
    report : dict
        Rotations tried, the best candidates' scores, pairs per stage, timings, the refusal test.
    """

    transform: Transform
    pairs: np.ndarray
    confidence: np.ndarray
    residuals: np.ndarray
    heldout_median: float
    heldout_p95: float
    src: Space
    dst: Space
    report: dict = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    def landmark_pairs(self, src_points, dst_points):
        """The matched pairs as :class:`atlasreg.io.landmarks.LandmarkPairs` (e.g. to write a BigWarp CSV)."""
        from ..io.landmarks import LandmarkPairs

        s = as_points(src_points, "src_points")[self.pairs[:, 0]]
        d = as_points(dst_points, "dst_points")[self.pairs[:, 1]]
        names = [f"{self.src.name}{i}-{self.dst.name}{j}" for i, j in self.pairs]
        return LandmarkPairs(s, d, self.src, self.dst, names)

    def summary(self) -> str:
        """A few human-readable lines."""
        r = self.report
        u = self.dst.unit
        lines = [
            f"matched {self.n_pairs} pairs of {r['n_src']} {self.src} and {r['n_dst']} {self.dst} points "
            f"(median confidence {np.median(self.confidence):.3f})" if self.n_pairs else "no pairs",
            f"rotations tried: {r['rotations_tried']}",
            f"global stage: best candidate {r['global']['best']['rotation_deg']:.1f}° "
            f"{'mirrored' if r['global']['best']['mirrored'] else 'proper'} rotation, "
            f"{r['global']['best']['inliers']} points with a partner within "
            f"{r['global']['inlier_radius_um']:.3g} µm (runner-up {r['global']['runner_up_inliers']})",
            f"final fit: {getattr(self.transform.report, 'model', 'none')}; held-out error median {self.heldout_median:.3g} {u}, "
            f"p95 {self.heldout_p95:.3g} {u} ({r['heldout_kind']}); soma spacing {r['spacing_um']:.3g} µm",
            f"residual of the matched pairs: median {np.median(self.residuals):.3g} {u}, "
            f"p95 {np.percentile(self.residuals, 95):.3g} {u}" if self.n_pairs else "",
            f"time {r['seconds']:.1f} s",
        ]
        return "\n".join(x for x in lines if x)

    def to_dict(self) -> dict:
        """JSON-serialisable report (pairs, confidences and residuals included)."""
        return {"src": self.src.name, "src_unit": self.src.unit, "dst": self.dst.name, "dst_unit": self.dst.unit,
                "n_pairs": self.n_pairs, "heldout_median": self.heldout_median, "heldout_p95": self.heldout_p95,
                "pairs": self.pairs.tolist(), "confidence": [round(float(c), 5) for c in self.confidence],
                "residuals": [float(v) for v in self.residuals],
                "fit": self.transform.report.to_dict() if getattr(self.transform, "report", None) else None,
                **self.report}


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
def _space(sp_, side: str) -> Space:
    if isinstance(sp_, Space):
        return sp_
    raise InputError(f"say the {side} space with its unit, e.g. {side}=Space('{'em' if side == 'src' else 'lm'}', "
                     f"'{'nm' if side == 'src' else 'um'}'): got {sp_!r}, which states no unit", field=side)


def _points(p, name: str) -> np.ndarray:
    arr = as_points(p, name)
    bad = np.flatnonzero(~np.isfinite(arr).all(1))
    if bad.size:
        raise InputError(f"{bad.size} point(s) contain NaN or inf (first: row {bad[0]}); remove or fix them",
                         field=name)
    if len(arr) < MIN_POINTS:
        raise InputError(f"{len(arr)} points are too few to match: at least {MIN_POINTS} are needed", field=name)
    sv = np.linalg.svd(arr - arr.mean(0), compute_uv=False)
    if sv[0] == 0 or sv[2] <= 1e-6 * sv[0]:
        raise InputError("the points are coplanar or collinear: a 3-D correspondence is not determined",
                         field=name)
    return arr


# ----------------------------------------------------------------------------------------------
# Helpers: rotations, neighbour queries in chunks
# ----------------------------------------------------------------------------------------------
def signed_permutations() -> np.ndarray:
    """The 48 signed axis permutations (24 rotations, then 24 mirror images), as (48, 3, 3).

    Examples
    --------
    >>> P = signed_permutations()
    >>> P.shape, int((np.linalg.det(P) > 0).sum())
    ((48, 3, 3), 24)
    """
    mats = []
    for p in itertools.permutations(range(3)):
        for s in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            m[np.arange(3), p] = s
            mats.append(m)
    mats = np.array(mats)
    det = np.linalg.det(mats)
    return np.concatenate([mats[det > 0], mats[det < 0]])


def _random_rotations(n: int, seed: int) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.random(n, random_state=seed).as_matrix() if n > 0 else np.zeros((0, 3, 3))


def _query(tree: cKDTree, x: np.ndarray, k: int = 1, bound: float = np.inf):
    """cKDTree.query in chunks (bounded memory for 10⁵-10⁶ queries)."""
    if len(x) <= _CHUNK:
        return tree.query(x, k=k, distance_upper_bound=bound)
    ds, js = [], []
    for a in range(0, len(x), _CHUNK):
        d, j = tree.query(x[a:a + _CHUNK], k=k, distance_upper_bound=bound)
        ds.append(d)
        js.append(j)
    return np.concatenate(ds), np.concatenate(js)


def _spacing(pts: np.ndarray, rng) -> float:
    sub = pts if len(pts) <= 20_000 else pts[rng.choice(len(pts), 20_000, replace=False)]
    d, _ = cKDTree(sub).query(sub, k=2)
    # a subsample is sparser than the whole: correct the spacing by the cube root of the density ratio
    return float(np.median(d[:, 1])) * (len(sub) / len(pts)) ** (1 / 3)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    c = (np.trace(a.T @ b) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1, 1))))


# ----------------------------------------------------------------------------------------------
# Stage 1: global search
# ----------------------------------------------------------------------------------------------
def _affine_fit(S, Y, w, ref=None, shrink=0.0, model="affine"):
    """Weighted fit of ``y ≈ A x + t``: ``"rotation"`` (A = ref's scale × a rotation, Procrustes with the sign of
    ``det(ref)``), or ``"affine"`` with a ridge of weight ``shrink`` (relative to the weighted spread) pulling A
    towards ``ref`` (so a source side that is mostly decoys cannot collapse the map onto a few dense points)."""
    w = w / w.sum()
    cs, cy = w @ S, w @ Y
    X0, Y0 = S - cs, Y - cy
    if model == "rotation":
        k = abs(np.linalg.det(ref)) ** (1 / 3)
        U, _, Vt = np.linalg.svd((Y0 * w[:, None]).T @ X0)
        sgn = np.sign(np.linalg.det(ref)) * np.sign(np.linalg.det(U @ Vt))
        R = U @ np.diag([1.0, 1.0, sgn]) @ Vt
        A = k * R
    else:
        H = (X0 * w[:, None]).T @ X0
        B = (X0 * w[:, None]).T @ Y0
        lam = shrink * np.trace(H) / 3
        if ref is None:
            ref, lam = np.zeros((3, 3)), 0.0
        A = np.linalg.solve(H + lam * np.eye(3), B + lam * ref.T).T
    return A, cy - A @ cs


def _soft_targets(m, tree, D, sigma, c, k=8):
    """CPD-style posterior of every mapped point over its k nearest destination points and an outlier term."""
    d, j = _query(tree, m, k=k, bound=3 * sigma)
    ok = np.isfinite(d)
    g = np.where(ok, np.exp(-0.5 * (np.where(ok, d, 0.0) / sigma) ** 2), 0.0)
    P = g / (g.sum(1) + c)[:, None]
    jj = np.where(ok, j, 0)
    p = P.sum(1)
    y = np.einsum("nk,nkd->nd", P, D[jj]) / np.maximum(p, 1e-300)[:, None]
    return y, p


def _outlier_const(D, sigma, inlier=0.5):
    """Outlier term ``c = ρ (2πσ²)^{3/2} (1 - π) / π``: uniform density ρ over the destination's bounding box,
    ``π`` the fraction of source points with a partner (re-estimated each iteration, as EM does for a mixture
    weight, so a source side that is mostly decoys does not pull the fit)."""
    ext = np.maximum(np.ptp(D, axis=0), 1e-9)
    rho = len(D) / float(np.prod(ext))
    inlier = float(np.clip(inlier, 0.02, 0.98))
    return rho * (2 * np.pi * sigma ** 2) ** 1.5 * (1 - inlier) / inlier


def _affine_cpd(S, D, tree, A, t, sigmas, iters=5, n_rotation=0, shrink=0.5):
    """Coarse-to-fine CPD-style polish: the first ``n_rotation`` widths fit a rotation at A's scale, the rest an
    affine shrunk towards the last rotation."""
    pi = 0.5
    ref = A
    for i, sg in enumerate(sigmas):
        model = "rotation" if i < n_rotation else "affine"
        for _ in range(iters):
            y, p = _soft_targets(S @ A.T + t, tree, D, sg, _outlier_const(D, sg, pi))
            pi = float(p.mean())
            if p.sum() < 4 or not np.isfinite(p).all():
                return A, t
            A, t = _affine_fit(S, y, p + 1e-12, ref=ref, shrink=shrink, model=model)
            if not (np.isfinite(A).all() and abs(np.linalg.det(A)) > 1e-12):
                return A, t
        if model == "rotation":
            ref = A
    return A, t


def _global(S, D, tree_d, spacing, n_rotations, n_candidates, rng, prior_R=None, prior_scale=None):
    """Search rotations × mirror images; returns (A, t, info) of the best affine and a report."""
    rots = np.concatenate([signed_permutations(), _random_rotations(n_rotations, int(rng.integers(1 << 31)))])
    mir = np.diag([1.0, 1.0, -1.0])
    n_rand = len(rots) - 48
    if n_rand:
        rots = np.concatenate([rots, rots[48:] @ mir])
    if prior_R is not None:
        rots = prior_R
    cS, cD = S.mean(0), D.mean(0)
    k = prior_scale if prior_scale is not None else float(
        np.sqrt(((D - cD) ** 2).sum(1).mean() / ((S - cS) ** 2).sum(1).mean()))
    sub = S[rng.choice(len(S), min(400, len(S)), replace=False)] - cS
    cap = 3 * spacing
    scores = np.empty(len(rots))
    for a in range(0, len(rots), 256):  # bounded memory: 256 candidates × 400 points at a time
        m = k * np.einsum("kij,nj->kni", rots[a:a + 256], sub) + cD
        d, _ = tree_d.query(m.reshape(-1, 3), distance_upper_bound=cap)
        scores[a:a + 256] = np.minimum(d, cap).reshape(len(m), -1).mean(1)
    order = np.argsort(scores)
    large = min(len(S), len(D)) > LARGE
    if large:
        # a large block's shape is near-symmetric at the level the scores see (rotations by 90° or 180° about its
        # axes tie): more candidates go on to the seeded polish, which tells them apart cell by cell
        n_candidates = max(n_candidates, 16)
    chosen: list[int] = []
    for i in order:
        det_i = np.linalg.det(rots[i])
        if all(np.linalg.det(rots[c]) * det_i < 0 or _angle_deg(rots[c], rots[i]) > 30 for c in chosen):
            chosen.append(int(i))
        if len(chosen) >= n_candidates:
            break
    # polish each candidate by an affine CPD on a subsample, count points with a close partner; a large block
    # (whose shape pins the rotation only to a few soma spacings at its edge) goes through the seeded polish
    Ssub = S if len(S) <= 5000 else S[rng.choice(len(S), 5000, replace=False)]
    radius = 0.4 * spacing
    sigmas = tuple(f * spacing for f in (2.3, 1.5, 1.0, 0.6, 0.4))
    cands = []
    for i in chosen:
        A0 = k * rots[i]
        seeds = None
        if large:
            A, t, n_in, seeds = _seeded_polish(S, D, tree_d, A0, cD - A0 @ cS, spacing, rng)
        else:
            A, t = _affine_cpd(Ssub, D, tree_d, A0, cD - A0 @ cS, sigmas, n_rotation=3)
            n_in = int(len(mutual_nearest(Ssub @ A.T + t, D, tree_d, radius)[0]) * len(S) / len(Ssub))
        cands.append({"index": i, "A": A, "t": t, "inliers": n_in, "score": float(scores[i]),
                      "mirrored": bool(np.linalg.det(rots[i]) < 0), "seeds": seeds})
    cands.sort(key=lambda c: -c["inliers"])
    best = cands[0]
    # the rotation angle of the best candidate's rotation (mirror removed) from the identity, for the report
    R0 = rots[best["index"]] @ (mir if best["mirrored"] else np.eye(3))
    info = {
        "n_rotations": len(rots), "scale_from_spread": k, "inlier_radius_um": radius,
        "best": {"rotation_deg": _angle_deg(np.eye(3), R0), "mirrored": best["mirrored"],
                 "inliers": best["inliers"], "chamfer_um": best["score"],
                 "start_matrix": rots[best["index"]].tolist()},
        "runner_up_inliers": cands[1]["inliers"] if len(cands) > 1 else 0,
        "candidates": [{"mirrored": c["mirrored"], "chamfer_um": c["score"], "inliers": c["inliers"],
                        **({"seeds": c["seeds"]} if c["seeds"] else {})} for c in cands],
        "seeded": large,
    }
    info["_starts"] = [(c["A"], c["t"], c["inliers"]) for c in cands]
    return best["A"], best["t"], info


def _offset_vote(m, tree_d, D, window, binw):
    """The translation most mapped points agree on: every (mapped point, destination point within ``window``)
    couple votes for its offset; the peak of the vote histogram (bins ``binw``, summed over 3×3×3 bins) and its
    height over the mean of the occupied bins."""
    from scipy.ndimage import uniform_filter

    nb = tree_d.query_ball_point(m, window)
    lens = np.fromiter((len(x) for x in nb), np.int64, len(nb))
    if lens.sum() == 0:
        return np.zeros(3), 0.0
    v = D[np.concatenate([np.asarray(x, np.int64) for x in nb])] - np.repeat(m, lens, axis=0)
    nbin = int(np.ceil(2 * window / binw))
    H, _ = np.histogramdd(v, bins=nbin, range=[(-window, window)] * 3)
    Hs = uniform_filter(H, 3, mode="constant")
    peak = np.unravel_index(int(np.argmax(Hs)), Hs.shape)
    off = -window + (np.asarray(peak) + 0.5) * (2 * window / nbin)
    return off, float(Hs[peak] / max(Hs[Hs > 0].mean(), 1e-12))


def _seeded_polish(S, D, tree_d, A, t, spacing, rng, n_seeds=24, ball=400, n_density=3000, early=6):
    """Polish of one rotation candidate for a block of many cells.

    Over a block hundreds of soma spacings wide, the block's shape and density layers (all a rotation search of a
    subsample can see) place the cells only to a few spacings at the edges, outside the reach of a cell-level CPD.
    So: (1) an affine CPD of subsamples of both clouds at widths of a few subsample spacings aligns the shapes;
    (2) at ``n_seeds`` sub-blocks spread over the source (``ball`` cells each, small enough that the smooth warp is
    nearly affine over one), the local offset left is found by a vote over all (cell, neighbour) offsets, and a local
    affine CPD at cell-level widths locks the sub-block in; (3) the pairs of the sub-blocks that lock (over 30 % of
    their cells with a mutual partner) give a trimmed global affine. If none of the first ``early`` sub-blocks locks,
    the candidate is given up. Returns (A, t, estimated inliers, report)."""
    Ss = S if len(S) <= n_density else S[rng.choice(len(S), n_density, replace=False)]
    Ds = D if len(D) <= n_density else D[rng.choice(len(D), n_density, replace=False)]
    ss = _spacing(Ds, rng)
    A, t = _affine_cpd(Ss, Ds, cKDTree(Ds), A, t, tuple(f * ss for f in (3.0, 2.0, 1.4, 1.0)), n_rotation=2)
    # seed centres: spread over the source, away from its bounding box where possible
    tree_s = cKDTree(S)
    r_ball = float(np.median(tree_s.query(S[rng.choice(len(S), 50)], k=ball)[0][:, -1]))
    lo, hi = S.min(0) + r_ball, S.max(0) - r_ball
    inner = np.flatnonzero((S > lo).all(1) & (S < hi).all(1))
    pool = inner if len(inner) >= 4 * n_seeds else np.arange(len(S))
    centres = S[pool[_stratified(S[pool], n_seeds, rng)]]
    rms = float(np.sqrt(((D - D.mean(0)) ** 2).sum(1).mean()))
    window = max(6 * spacing, 0.12 * rms)
    pairs_s, pairs_d, seeds = [], [], []
    for n_done, c in enumerate(centres):
        if n_done == early and not pairs_s:
            break  # a wrong rotation locks nowhere: stop early
        idx = tree_s.query(c, k=min(ball, len(S)))[1]
        Sb = S[idx]
        off, contrast = _offset_vote(Sb @ A.T + t, tree_d, D, window, 0.4 * spacing)
        Ab, tb = _affine_cpd(Sb, D, tree_d, A, t + off, tuple(f * spacing for f in (1.0, 0.6, 0.4)), shrink=0.2)
        ei, lj, _ = mutual_nearest(Sb @ Ab.T + tb, D, tree_d, 0.4 * spacing)
        ok = len(ei) > 0.3 * len(Sb)
        seeds.append({"offset_um": float(np.linalg.norm(off)), "vote_contrast": round(contrast, 2),
                      "locked_fraction": round(len(ei) / len(Sb), 3)})
        if ok:
            pairs_s.append(Sb[ei])
            pairs_d.append(D[lj])
    n_ok = len(pairs_s)
    rep = {"n_seeds": len(centres), "locked": n_ok, "cells_per_seed": ball, "vote_window_um": window,
           "per_seed": seeds}
    if n_ok < 3:
        return A, t, int(sum(s["locked_fraction"] for s in seeds) / max(len(seeds), 1) * len(S)), rep
    Ps, Pd = np.concatenate(pairs_s), np.concatenate(pairs_d)
    keep = np.ones(len(Ps), bool)
    for _ in range(3):  # trimmed: pairs far off the common affine (a seed locked one cell off) are set aside
        Mx = fit_linear(Ps[keep], Pd[keep], "affine")
        r = np.linalg.norm(Ps @ Mx[:3, :3].T + Mx[:3, 3] - Pd, axis=1)
        keep = r <= 3 * np.median(r[keep])
    A, t = Mx[:3, :3], Mx[:3, 3]
    rep["affine_residual_median_um"] = float(np.median(r[keep]))
    # the estimate of the cells with a partner: the locked fraction of the seeds times the source
    return A, t, int(np.mean([s["locked_fraction"] for s in seeds]) * len(S)), rep


# ----------------------------------------------------------------------------------------------
# Stage 2: non-rigid field (affine + truncated Gaussian radial basis on a grid, ridge-regularised)
# ----------------------------------------------------------------------------------------------
class _Field:
    def __init__(self, A, t, C=None, W=None, beta=None):
        self.A, self.t, self.C, self.W, self.beta = A, t, C, W, beta

    def basis(self, X):
        return _basis(X, self.C, self.beta)

    def __call__(self, X):
        out = X @ self.A.T + self.t
        if self.C is not None:
            for a in range(0, len(X), _CHUNK):
                out[a:a + _CHUNK] += _basis(X[a:a + _CHUNK], self.C, self.beta) @ self.W
        return out


def _basis(X, C, beta) -> sp.csr_matrix:
    """Sparse Gaussian basis exp(-r²/2β²), truncated at 3β."""
    r = cKDTree(X).sparse_distance_matrix(cKDTree(C), 3 * beta, output_type="ndarray")
    return sp.csr_matrix((np.exp(-0.5 * (r["v"] / beta) ** 2), (r["i"], r["j"])), shape=(len(X), len(C)))


def _grid_centres(X, h):
    lo = X.min(0)
    idx = np.floor((X - lo) / h).astype(np.int64)
    _, inv = np.unique(idx, axis=0, return_inverse=True)
    inv = inv.ravel()
    C = np.zeros((inv.max() + 1, 3))
    np.add.at(C, inv, X)
    return C / np.bincount(inv)[:, None]


def _fit_field(X, Y, p, C, beta, alpha=1.0, Phi=None) -> _Field:
    """Weighted least squares for affine + basis weights, ridge ``alpha`` (per centre, scaled by the weights)."""
    c = X.mean(0)
    k = float(np.sqrt(((X - c) ** 2).sum(1).mean())) or 1.0
    Phi = _basis(X, C, beta) if Phi is None else Phi
    G = sp.hstack([sp.csr_matrix(np.hstack([(X - c) / k, np.ones((len(X), 1))])), Phi]).tocsr()
    Gw = G.multiply(p[:, None]).tocsr()
    H = (G.T @ Gw).toarray()
    H[np.arange(4, H.shape[0]), np.arange(4, H.shape[0])] += alpha * p.sum() / len(C)
    coef = scipy.linalg.solve(H, np.asarray(Gw.T @ Y), assume_a="pos")
    A = coef[:3].T / k
    return _Field(A, coef[3] - A @ c, C, coef[4:], beta)


def _nonrigid(S, D, tree_d, A, t, spacing, rng, max_centres=2500, fit_points=15_000, iters=3):
    f = _Field(A, t)
    Sf = S if len(S) <= fit_points else S[rng.choice(len(S), fit_points, replace=False)]
    vol = float(np.prod(np.maximum(np.ptp(S @ A.T, axis=0), spacing)))
    h_min = (vol / max_centres) ** (1 / 3)
    stages = []
    pi = 0.5
    m = f(Sf)
    for fs, fh in SCHEDULE:
        sg = fs * spacing
        h = max(fh * spacing, h_min)
        # centres on a grid in the destination frame, pulled back through the affine part; fixed for the stage,
        # so the basis of the fitting points is built once per stage
        C = (_grid_centres(m, h) - f.t) @ np.linalg.inv(f.A).T
        beta = h * abs(np.linalg.det(f.A)) ** (-1 / 3)
        Phi = _basis(Sf, C, beta)
        p = np.zeros(len(Sf))
        for _ in range(iters):
            Y, p = _soft_targets(m, tree_d, D, sg, _outlier_const(D, sg, pi))
            pi = float(p.mean())
            if p.sum() < 10:
                break
            f = _fit_field(Sf, Y, p + 1e-9, C, beta, Phi=Phi)
            m = Sf @ f.A.T + f.t + Phi @ f.W
        stages.append({"sigma_um": sg, "basis_spacing_um": h, "matched_mass": float(p.sum() * len(S) / len(Sf))})
    return f, stages


# ----------------------------------------------------------------------------------------------
# Stage 3: pairs, final fit, confidence
# ----------------------------------------------------------------------------------------------
def mutual_nearest(m, D, tree_d=None, gate=np.inf):
    """Mutual nearest neighbours within ``gate``: (rows of ``m``, rows of ``D``, distances).

    ``m`` are source points already mapped into ``D``'s frame; ``tree_d`` is a ``cKDTree`` of ``D`` (built
    here when not given). A pair is kept when each point is the other's nearest neighbour.

    Examples
    --------
    >>> import numpy as np
    >>> i, j, d = mutual_nearest(np.array([[0., 0, 0], [5, 5, 5]]), np.array([[5., 5, 5.1], [0, 0, 0.1]]), gate=1)
    >>> i.tolist(), j.tolist()
    ([0, 1], [1, 0])
    """
    if tree_d is None:
        tree_d = cKDTree(D)
    d, j = _query(tree_d, m, k=1, bound=gate)
    ok = np.isfinite(d)
    jj = np.where(ok, j, 0)
    d2, i2 = _query(cKDTree(m), D, k=1, bound=gate)
    ok &= i2[jj] == np.arange(len(m))
    return np.flatnonzero(ok), jj[ok], d[ok]


def _stratified(pts, n, rng):
    """At most ``n`` rows spread over space (one random row per grid cell, cells sized for ~n)."""
    if len(pts) <= n:
        return np.arange(len(pts))
    ext = np.maximum(np.ptp(pts, axis=0), 1e-9)
    h = (float(np.prod(ext)) / n) ** (1 / 3)
    for _ in range(20):
        cell = np.floor((pts - pts.min(0)) / h).astype(np.int64)
        perm = rng.permutation(len(pts))
        _, first = np.unique(cell[perm], axis=0, return_index=True)
        if len(first) <= n:
            return np.sort(perm[first])
        h *= 1.1
    return np.sort(rng.choice(len(pts), n, replace=False))


def _fit(Sraw, Draw, ei, lj, src, dst, max_fit_pairs, rng):
    """fit_landmarks on the pairs (a stratified subset when there are many); held-out error and its kind."""
    sub = _stratified(Draw[lj], max_fit_pairs, rng)
    T = fit_landmarks(Sraw[ei[sub]], Draw[lj[sub]], model="auto", src=src, dst=dst)
    if len(sub) < len(ei):
        rest = np.setdiff1d(np.arange(len(ei)), sub)
        err = np.linalg.norm(T.map_points(Sraw[ei[rest]]) - Draw[lj[rest]], axis=1)
        kind = f"error at {len(rest)} matched pairs not used in the fit"
    else:
        rep = T.report
        err = rep.heldout[np.setdiff1d(np.arange(rep.n_pairs), rep.rejected)]
        kind = "leave-one-out over the pairs used"
    return T, float(np.median(err)), float(np.percentile(err, 95)), kind


def _confidence(m, D, tree_d, ei, lj, sigma, c):
    d, j = _query(tree_d, m[ei], k=8, bound=3 * sigma)
    g = np.where(np.isfinite(d), np.exp(-0.5 * (np.where(np.isfinite(d), d, 0.0) / sigma) ** 2), 0.0)
    g[j == lj[:, None]] = 0.0  # the partner itself is counted once, below, wherever it lies
    own = np.exp(-0.5 * (np.linalg.norm(m[ei] - D[lj], axis=1) / sigma) ** 2)
    return own / (own + g.sum(1) + c + 1e-300)


def _prior(prior, src, dst, s_um):
    """Rotations (and scale) to search from a prior: a Transform, or bounds {"rotation_deg": N} around identity."""
    if prior is None:
        return None, None, None
    if isinstance(prior, Transform):
        pts = s_um[:: max(1, len(s_um) // 2000)]
        raw = pts * unit_scale("um", prior.src.unit) if prior.src.unit else pts
        mapped = prior.map_points(raw) * unit_scale(prior.dst.unit, "um")
        if not np.isfinite(mapped).all():
            raise InputError("the prior transform gives NaN for some source points", field="prior")
        m = fit_linear(pts, mapped, "affine")
        return m[:3, :3], m[:3, 3], None
    if isinstance(prior, dict):
        unknown = set(prior) - {"rotation_deg", "rotation", "scale"}
        if unknown:
            raise InputError(f"unknown prior keys {sorted(unknown)}; use rotation_deg (and optionally rotation, "
                             "a 3x3 matrix, the centre of the bounds, and scale)", field="prior")
        R0 = np.asarray(prior.get("rotation", np.eye(3)), float)
        if R0.shape != (3, 3):
            raise InputError("prior['rotation'] must be a 3x3 matrix", field="prior")
        lim = float(prior.get("rotation_deg", 180.0))
        from scipy.spatial.transform import Rotation

        rv = Rotation.random(4000, random_state=0)
        keep = np.degrees(rv.magnitude()) <= lim
        rots = np.concatenate([np.eye(3)[None], rv.as_matrix()[keep]]) @ R0
        return None, None, (rots, prior.get("scale"))
    raise InputError(f"prior must be a Transform or a dict of bounds, got {type(prior).__name__}", field="prior")


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------
def match_landmarks(src_points, dst_points, src: Space = Space("em", "nm"), dst: Space = Space("lm", "um"),
                    prior=None, *, n_rotations: int = 1000, n_candidates: int = 6, max_fit_pairs: int = 2000,
                    min_pairs: int = 20, max_heldout_spacing: float = 0.25, seed: int = 0, n_finalists: int = 3,
                    refuse: bool = True) -> MatchResult:
    """Find which points of two unpaired clouds correspond, and the map between them, without a starting guess.

    Parameters
    ----------
    src_points, dst_points : (N, 3), (M, 3) arrays
        Unpaired points (e.g. soma centroids) in their spaces' units; either
        side may hold points without a partner.
    src, dst : Space
        The two spaces with their units (``Space("em", "nm")``, ``Space("lm", "um")``).
    prior : Transform or dict, optional
        An approximate ``src -> dst`` transform (searching then starts from it),
        or bounds: ``{"rotation_deg": 20}`` (rotations within ±20° of
        ``prior["rotation"]``, default the identity; ``"scale"`` fixes the
        start scale). Without a prior every rotation is tried, mirror images
        included (see the module notes).
    n_rotations, n_candidates
        Quasi-random rotations tried besides the 48 signed axis permutations
        (each also mirrored); distinct best candidates polished by affine CPD.
    n_finalists : int
        The non-rigid stage runs from this many of the best global candidates (those with at least half the
        best one's close partners); the one with the most matched mass wins.
    max_fit_pairs : int
        At most this many (spatially stratified) pairs go into the final spline
        fit; the rest measure its held-out error.
    min_pairs, max_heldout_spacing : refusal test
        Fewer pairs than ``min_pairs``, or a held-out median error above
        ``max_heldout_spacing`` soma spacings, means no consistent match.
    seed : int
        Seed of the subsamples and random rotations (results are reproducible).
    refuse : bool
        Raise :class:`NoMatchError` when the refusal test fails (default);
        with ``False`` the result is returned with ``report["consistent"] = False``.

    Returns
    -------
    MatchResult
        ``.transform`` (src -> dst), ``.pairs`` (row indices), ``.confidence``,
        ``.heldout_median`` / ``.heldout_p95``, ``.report``, ``.summary()``.

    Raises
    ------
    InputError
        Spaces without units, fewer than 10 points, NaN/inf, coplanar points, a bad prior.
    NoMatchError
        No consistent correspondence (e.g. two unrelated clouds); ``.result`` holds the details.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> lm = rng.uniform(0, 400, (300, 3))                            # µm
    >>> R = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])                # axes swapped
    >>> em = (lm - 200) @ R * 1000 / 1.1                               # nm, another frame
    >>> res = match_landmarks(em[:250], lm[50:], src=Space("em", "nm"), dst=Space("lm", "um"))
    >>> int((res.pairs[:, 0] == res.pairs[:, 1] + 50).sum()) >= 190
    True
    """
    t0 = time.perf_counter()
    src, dst = _space(src, "src"), _space(dst, "dst")
    if src.name == dst.name:
        raise InputError(f"src and dst are both named {src.name!r}; give the two spaces different names", field="dst")
    s_raw = _points(src_points, "src_points")
    d_raw = _points(dst_points, "dst_points")
    rng = np.random.default_rng(seed)
    S = s_raw * unit_scale(src.unit, "um")
    D = d_raw * unit_scale(dst.unit, "um")
    tree_d = cKDTree(D)
    spacing = _spacing(D, rng)
    A0, t0_, bounds = _prior(prior, src, dst, S)
    timings = {}
    if A0 is not None:
        large = min(len(S), len(D)) > LARGE
        seeds = None
        if large:  # a rough prior over a large block is off by more than a cell at its edges: seeded sub-blocks
            A, t, _, seeds = _seeded_polish(S, D, tree_d, A0, t0_, spacing, rng)
        else:
            A, t = _affine_cpd(S if len(S) <= 5000 else S[rng.choice(len(S), 5000, replace=False)], D, tree_d, A0,
                               t0_, tuple(f * spacing for f in (1.0, 0.6, 0.4)))
        ginfo = {"n_rotations": 0, "from_prior": "transform", "inlier_radius_um": 0.4 * spacing,
                 "best": {"rotation_deg": float("nan"), "mirrored": bool(np.linalg.det(A) < 0), "inliers": -1,
                          "chamfer_um": float("nan")}, "runner_up_inliers": -1, "seeded": large,
                 "candidates": [{"mirrored": bool(np.linalg.det(A) < 0), "chamfer_um": float("nan"), "inliers": -1,
                                 **({"seeds": seeds} if seeds else {})}]}
        tried = "none (started from the prior transform)"
    else:
        rots, scale = (None, None) if bounds is None else bounds
        A, t, ginfo = _global(S, D, tree_d, spacing, n_rotations, n_candidates, rng, prior_R=rots,
                              prior_scale=scale)
        tried = (f"{len(rots)} rotations within the prior's bounds (no mirror images)" if rots is not None else
                 f"the 24 signed axis permutations (cube rotations), the 24 mirrored ones, and {n_rotations} "
                 f"quasi-random rotations each with and without a mirror ({48 + 2 * n_rotations} in all)")
    timings["global_s"] = time.perf_counter() - t0
    # the non-rigid stage from the best few global candidates (a near-symmetric block can leave several rotations
    # almost tied at the affine level); the one whose field claims the most matched mass wins
    starts = ginfo.pop("_starts", [(A, t, 0)])
    starts = [st for st in starts[:n_finalists] if st[2] >= 0.5 * starts[0][2]] or starts[:1]
    # a large block whose sub-blocks lock in under no rotation candidate has no cell-level correspondence: it is
    # refused here, without the non-rigid stage
    locked_nowhere = bool(ginfo.get("seeded")) and not any(c.get("seeds", {}).get("locked")
                                                           for c in ginfo["candidates"])
    if locked_nowhere:
        starts = []
        best = (_Field(A, t), [], -1)
    else:
        best = None
    for k, (A_, t_, _) in enumerate(starts):
        f_, stages_ = _nonrigid(S, D, tree_d, A_, t_, spacing, np.random.default_rng([seed, k]))
        if best is None or stages_[-1]["matched_mass"] > best[1][-1]["matched_mass"]:
            best = (f_, stages_, k)
    f, stages, k_best = best
    ginfo["nonrigid_finalists"] = len(starts)
    ginfo["finalist_chosen"] = k_best
    timings["nonrigid_s"] = time.perf_counter() - t0 - timings["global_s"]

    # pairs under the field; a fit on them; pairs again through that fit (gate from its held-out error); the final fit
    to_um = unit_scale(dst.unit, "um")
    u_dst = 1.0 / to_um
    m = f(S)
    if locked_nowhere:
        ei = lj = np.zeros(0, np.int64)
    else:
        ei, lj, _ = mutual_nearest(m, D, tree_d, 2.5 * SCHEDULE[-1][0] * spacing)
    report = {"n_src": len(S), "n_dst": len(D), "spacing_um": spacing, "rotations_tried": tried, "global": ginfo,
              "stages": stages, "pairs_per_round": [int(len(ei))]}
    T = None
    med = p95 = float("nan")
    kind = ""
    enough = max(min_pairs, 6)
    if len(ei) >= enough:
        T, med, p95, kind = _fit(s_raw, d_raw, ei, lj, src, dst, max_fit_pairs, rng)
        m = T.map_points(s_raw) * to_um
        gate = min(max(2.0 * p95 * to_um, 2.5 * SCHEDULE[-1][0] * spacing), 0.6 * spacing)
        e2, l2, _ = mutual_nearest(m, D, tree_d, gate)
        report["pairs_per_round"].append(int(len(e2)))
        if len(e2) >= enough:
            ei, lj = e2, l2
            T, med, p95, kind = _fit(s_raw, d_raw, ei, lj, src, dst, max_fit_pairs, rng)
            m = T.map_points(s_raw) * to_um
    consistent, reason = True, ""
    if T is None:
        consistent, reason = False, (f"only {len(ei)} pairs found (at least {enough} needed): the clouds show no "
                                     "consistent correspondence")
        if locked_nowhere:
            g = ginfo["candidates"][0]["seeds"]
            reason = (f"no sub-block of {g['cells_per_seed']} source cells locked in under any of the "
                      f"{len(ginfo['candidates'])} rotation candidates tried (at most {g['n_seeds']} sub-blocks "
                      "each): the clouds show no consistent correspondence at the cell level")
        mat = np.eye(4)  # the field's affine part, for the record only
        mat[:3, :3] = f.A * unit_scale(src.unit, "um") * u_dst
        mat[:3, 3] = f.t * u_dst
        T = Affine(mat, src, dst)
        T.report = None
    elif med * to_um > max_heldout_spacing * spacing:
        consistent, reason = False, (
            f"the held-out error of the fit ({med * to_um:.3g} µm median) is not far below the soma spacing "
            f"({spacing:.3g} µm; at most {max_heldout_spacing:g} of it is accepted): the pairs are not a consistent "
            "correspondence")
    # confidence: a Gaussian of the held-out error scale (median of a 3-D Gaussian's norm is 1.538 σ)
    sigma_c = max(med * to_um / 1.538, 1e-3 * spacing) if np.isfinite(med) else 0.25 * spacing
    conf = (_confidence(m, D, tree_d, ei, lj, sigma_c, _outlier_const(D, sigma_c)) if len(ei) else np.zeros(0))
    resid = np.linalg.norm(m[ei] - D[lj], axis=1) * u_dst if len(ei) else np.zeros(0)
    timings["seconds"] = time.perf_counter() - t0
    report.update({"consistent": consistent, "reason": reason, "heldout_kind": kind,
                   "seconds": timings["seconds"], "timings": timings,
                   "refusal_test": {"min_pairs": min_pairs, "max_heldout_spacing": max_heldout_spacing}})
    res = MatchResult(T, np.stack([ei, lj], 1).astype(np.int64), conf, resid, med, p95, src, dst, report)
    log.info("match_landmarks %s -> %s: %d pairs, held-out median %.3g %s, %.1f s", src.name, dst.name, len(ei),
             med, dst.unit, timings["seconds"])
    if not consistent and refuse:
        raise NoMatchError(reason, result=res)
    return res


def write_match(result: MatchResult, src_points, dst_points, transform_path, pairs_path=None, report_path=None,
                figure_path=None, force: bool = False, truth=None) -> dict:
    """Write a match: the transform (any :func:`~atlasreg.save_transform` format), the pairs as a BigWarp CSV
    (moving = source, fixed = destination, each in its space's unit), a JSON report, and a PNG of the matches.

    Default names sit beside ``transform_path``: ``<stem>.pairs.csv``, ``<stem>.report.json``,
    ``<stem>.matches.png``. ``truth`` (rows of known true pairs, optional) marks found and wrong pairs in the
    figure. Returns the paths written.

    Examples
    --------
    >>> res = match_landmarks(em, lm, src=Space("em", "nm"), dst=Space("lm", "um"))   # doctest: +SKIP
    >>> write_match(res, em, lm, "em_to_lm.json")                                     # doctest: +SKIP
    """
    from pathlib import Path
    import json

    from ..io.atomic import atomic_path, check_writable
    from ..io.landmarks import write_landmarks
    from ..qc.figures import figure_png, matched_points
    from ..transforms.files import save_transform

    out = Path(transform_path)
    stem = out.name
    for suf in (".json", ".h5", ".tfm", ".txt", ".mat"):
        if stem.endswith(suf):
            stem = stem[: -len(suf)]
            break
    paths = {"transform": out,
             "pairs": Path(pairs_path) if pairs_path else out.with_name(stem + ".pairs.csv"),
             "report": Path(report_path) if report_path else out.with_name(stem + ".report.json"),
             "figure": Path(figure_path) if figure_path else out.with_name(stem + ".matches.png")}
    for p in paths.values():
        check_writable(p, force)
    s = as_points(src_points, "src_points")
    d = as_points(dst_points, "dst_points")
    save_transform(result.transform, out, force=force)
    write_landmarks(result.landmark_pairs(s, d), paths["pairs"], format="bigwarp", force=force)
    doc = {"transform": str(out), "pairs_file": str(paths["pairs"]),
           "pairs_file_format": f"BigWarp CSV: name, active, {result.src.name} x y z ({result.src.unit}), "
                                f"{result.dst.name} x y z ({result.dst.unit})", **result.to_dict()}
    with atomic_path(paths["report"], force) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, default=float))
    mapped = result.transform.map_points(s) * unit_scale(result.dst.unit, "um")
    fig = matched_points(s * unit_scale(result.src.unit, "um"), mapped, d * unit_scale(result.dst.unit, "um"),
                         result.pairs, result.confidence, truth=truth,
                         title=f"{result.src.name} -> {result.dst.name}: {result.n_pairs} matched pairs, held-out "
                               f"median {result.heldout_median * unit_scale(result.dst.unit, 'um'):.3g} µm")
    png = figure_png(fig)
    with atomic_path(paths["figure"], force) as tmp:
        tmp.write_bytes(png)
    return paths
