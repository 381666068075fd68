"""The registration ground-truth task, built exactly as ``shared/PEERS.md`` ("The ground-truth task, exactly") says.

Frame: the light-sheet TIFF as stored (``psl``), voxel size (50, 40, 40) µm, voxel centre ``i`` at ``i * spacing``.
``T`` maps a FIXED physical point ``y`` to a MOVING point::

    T(y) = A (y - c) + c + t + u(y),   A = R(8° in the plane of axes 1, 2) @ diag(0.92, 1.05, 0.97)

with ``c`` the volume centre (``shape * spacing / 2``), ``t = (300, -200, 150)`` µm and ``u`` a cubic B-spline
displacement (scipy ``map_coordinates`` order 3, mode nearest, at ``y / 250``) on a grid of
``ceil(shape * spacing / 250)`` nodes per axis; each component is ``gaussian_filter(rng.standard_normal(grid), 3)``
(``rng = default_rng(seed)``, components drawn in order) and all three are scaled together so that the largest
``|u|`` over the three components is 250 µm. ``MOVING(x) = FIXED(T⁻¹(x))`` (``T⁻¹`` by fixed-point iteration,
linear interpolation of FIXED). Scoring points: 20,000 voxel centres of FIXED above its 60th percentile, drawn with
``default_rng(1)``. The moving → fixed error of an estimate ``S`` (moving → fixed) is ``|S(T(P)) - P|``; the
fixed → moving error of ``S⁻¹`` is ``|S⁻¹(P) - T(P)|``.

Variants (issue 15 §3), by parameters of :func:`make_task`; the defaults are the public task above, unchanged:

- ``affine="random"``: the affine drawn from the seed (``default_rng([15, seed])``, independent of the
  displacement's ``default_rng(seed)``): a rotation of up to 10° about a uniformly random axis (so in any plane),
  scales uniform in 0.92-1.08 per axis, translation uniform in ±300 µm per axis;
- ``affine="issue15"``: issue 15's example, 9.6° in the plane of axes 0 and 2, scales (1.04, 1.01, 0.94),
  translation (150, -150, 150) µm (the issue gives "±150 µm"; these signs are this file's choice);
- ``node_spacing=150, smooth_nodes=2``: a rougher displacement (B-spline grid 150 µm, σ 2 nodes).

:data:`CASES` names them (``public``, ``random``, ``rough`` = random affine + rough field, ``issue15``) and
:func:`parse_case` reads ``"random:10"`` style names (the benchmark's ``--tasks``).

Used by ``benchmarks/bench_registration.py``, other benchmarks and the tests::

    from benchmarks.groundtruth import make_task
    task = make_task(seed=0)            # task.fixed, task.moving (numpy, psl), task.T(y), task.points
    task = make_task(10, affine="random", node_spacing=150, smooth_nodes=2)   # a rough, random-affine variant
    err = task.errors(map_moving_to_fixed, map_fixed_to_moving)

The generated MOVING volume takes a minute at full size, so it is cached (``ATLASREG_CACHE`` or
``~/.cache/atlasreg/groundtruth``) keyed by seed, variant, shape and a hash of this construction.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

SPACING = (50.0, 40.0, 40.0)
ORIENTATION = "psl"
ANGLE_DEG = 8.0
SCALES = (0.92, 1.05, 0.97)
TRANSLATION = (300.0, -200.0, 150.0)
NODE_SPACING = 250.0
SMOOTH_NODES = 3.0
MAX_DISP = 250.0
N_POINTS = 20_000
POINT_PERCENTILE = 60.0
POINT_SEED = 1
_VERSION = "gt-v1"  # bump when the construction changes (invalidates caches)
RANDOM_MAX_ANGLE_DEG = 10.0
RANDOM_SCALES = (0.92, 1.08)
RANDOM_MAX_TRANSLATION = 300.0
AFFINE_STREAM = 15        # the random affine's rng: default_rng([AFFINE_STREAM, seed])
ISSUE15_ANGLE_DEG = 9.6   # in the plane of axes 0 and 2
ISSUE15_SCALES = (1.04, 1.01, 0.94)
ISSUE15_TRANSLATION = (150.0, -150.0, 150.0)
AFFINES = ("public", "random", "issue15")
#: named task families: parameters of make_task
CASES = {
    "public": {},
    "random": {"affine": "random"},
    "rough": {"affine": "random", "node_spacing": 150.0, "smooth_nodes": 2.0},
    "issue15": {"affine": "issue15"},
}
#: distance-to-edge bins of the error breakdown (µm; the distance of a point to the nearer image edge, negative
#: when its true position T(P) lies outside the moving image)
EDGE_BINS = ((-np.inf, 0.0), (0.0, 500.0), (500.0, 1000.0), (1000.0, 2000.0), (2000.0, np.inf))


def data_dir() -> Path:
    env = os.environ.get("ATLASREG_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def default_brain_path() -> Path:
    return data_dir() / "lightsheet" / "brain_psl_50x40x40um.tif"


def _rotation(axis, angle_deg: float) -> np.ndarray:
    """Rotation by ``angle_deg`` about unit ``axis`` (Rodrigues)."""
    k = np.asarray(axis, float)
    k = k / np.linalg.norm(k)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = math.radians(angle_deg)
    return np.eye(3) + math.sin(a) * K + (1 - math.cos(a)) * K @ K


def affine_matrix() -> np.ndarray:
    """``A = R @ diag(0.92, 1.05, 0.97)``, R a rotation of 8° in the plane of axes 1 and 2 (the public task)."""
    a = math.radians(ANGLE_DEG)
    R = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    return R @ np.diag(SCALES)


def affine_parts(affine: str = "public", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(A, t)`` of a task's affine part: ``"public"`` (PEERS.md), ``"random"`` (drawn from ``seed``) or
    ``"issue15"``.

    Examples
    --------
    >>> A, t = affine_parts("random", 10)
    >>> bool(np.all(np.abs(t) <= 300)), bool(np.all((np.linalg.svd(A)[1] > 0.91) & (np.linalg.svd(A)[1] < 1.09)))
    (True, True)
    """
    if affine == "public":
        return affine_matrix(), np.asarray(TRANSLATION, float)
    if affine == "issue15":
        a = math.radians(ISSUE15_ANGLE_DEG)
        R = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
        return R @ np.diag(ISSUE15_SCALES), np.asarray(ISSUE15_TRANSLATION, float)
    if affine == "random":
        rng = np.random.default_rng([AFFINE_STREAM, int(seed)])
        axis = rng.standard_normal(3)
        angle = rng.uniform(-RANDOM_MAX_ANGLE_DEG, RANDOM_MAX_ANGLE_DEG)
        scales = rng.uniform(*RANDOM_SCALES, size=3)
        t = rng.uniform(-RANDOM_MAX_TRANSLATION, RANDOM_MAX_TRANSLATION, size=3)
        return _rotation(axis, angle) @ np.diag(scales), t
    raise ValueError(f"affine must be one of {', '.join(AFFINES)}, got {affine!r}")


def displacement_coefficients(shape, spacing, seed: int, node_spacing: float = NODE_SPACING,
                              smooth_nodes: float = SMOOTH_NODES) -> np.ndarray:
    """The node values of ``u``: (3, *grid) float64, max |component| = 250 µm."""
    extent = np.asarray(shape, float) * np.asarray(spacing, float)
    grid = tuple(int(math.ceil(e / float(node_spacing))) for e in extent)
    rng = np.random.default_rng(seed)
    comps = [ndi.gaussian_filter(rng.standard_normal(grid), float(smooth_nodes)) for _ in range(3)]
    u = np.stack(comps)
    return u * (MAX_DISP / np.abs(u).max())


@dataclass
class GroundTruthTask:
    """One ground-truth registration task: FIXED (the real brain), MOVING = FIXED warped by the known T."""

    seed: int
    fixed: np.ndarray
    moving: np.ndarray
    spacing: tuple
    coeffs: np.ndarray
    points: np.ndarray                      # (N, 3) scoring points in FIXED, µm
    orientation: str = ORIENTATION
    A: np.ndarray = field(default_factory=affine_matrix, repr=False)          # the linear part of T
    translation: np.ndarray = field(default_factory=lambda: np.asarray(TRANSLATION, float))
    node_spacing: float = NODE_SPACING
    name: str = ""                                                           # e.g. "random:10"
    _filtered: list = field(default_factory=list, repr=False)

    @property
    def center(self) -> np.ndarray:
        return np.asarray(self.fixed.shape, float) * np.asarray(self.spacing, float) / 2.0

    def u(self, y: np.ndarray) -> np.ndarray:
        """Displacement ``u(y)`` (N, 3) µm: order-3 B-spline at ``y / 250``, mode nearest."""
        if not self._filtered:  # prefilter once; map_coordinates then only evaluates
            self._filtered.extend(ndi.spline_filter(c, order=3, mode="nearest") for c in self.coeffs)
        q = (np.asarray(y, float) / float(self.node_spacing)).T
        return np.stack([ndi.map_coordinates(f, q, order=3, mode="nearest", prefilter=False)
                         for f in self._filtered], axis=1)

    def T(self, y) -> np.ndarray:
        """The true map FIXED point -> MOVING point (µm)."""
        y = np.asarray(y, float)
        c = self.center
        return (y - c) @ np.asarray(self.A).T + c + np.asarray(self.translation, float) + self.u(y)

    def T_inv(self, x, tol: float = 1e-3, max_iter: int = 100) -> np.ndarray:
        """MOVING point -> FIXED point, by fixed-point iteration ``y = A⁻¹(x - c - t - u(y)) + c``."""
        x = np.asarray(x, float)
        c = self.center
        Ainv = np.linalg.inv(np.asarray(self.A))
        base = x - c - np.asarray(self.translation, float)
        y = base @ Ainv.T + c
        active = np.arange(len(x))
        for _ in range(max_iter):
            ya = y[active]
            new = (base[active] - self.u(ya)) @ Ainv.T + c
            step = np.abs(new - ya).max(axis=1)
            y[active] = new
            active = active[step > tol]
            if active.size == 0:
                break
        return y

    def edge_distance(self, P=None) -> np.ndarray:
        """Distance (µm) of each scoring point to the nearer image edge: ``P`` to the FIXED image's edge or its
        true position ``T(P)`` to the MOVING image's (both images span ``-s/2 .. (n - 1/2) s`` per axis),
        negative when ``T(P)`` lies outside the moving image (where the moving image says nothing of it)."""
        P = self.points if P is None else np.asarray(P, float)
        sp = np.asarray(self.spacing, float)
        lo, hi = -sp / 2, (np.asarray(self.fixed.shape) - 0.5) * sp

        def inside(x):
            return np.minimum(x - lo, hi - x).min(axis=1)

        return np.minimum(inside(P), inside(self.T(P)))

    def errors(self, moving_to_fixed: Callable | None = None,
               fixed_to_moving: Callable | None = None, by_edge: bool = False) -> dict:
        """Median and p95 error (µm) of an estimate in both directions, on the scoring points.

        ``moving_to_fixed(points)`` maps MOVING points to FIXED; ``fixed_to_moving`` the reverse. NaN results
        (points mapped outside a field) count as infinitely wrong. ``by_edge`` adds ``"by_edge"``: the same
        numbers per bin of :meth:`edge_distance` (:data:`EDGE_BINS`).
        """
        P = self.points
        TP = self.T(P)
        dist = self.edge_distance(P) if by_edge else None
        out = {}
        for name, fn, src, want in (("moving_to_fixed", moving_to_fixed, TP, P),
                                    ("fixed_to_moving", fixed_to_moving, P, TP)):
            if fn is None:
                continue
            got = np.asarray(fn(src), float)
            e = np.linalg.norm(got - want, axis=1)
            e[~np.isfinite(e)] = np.inf
            out[name] = {"median_um": float(np.median(e)), "p95_um": float(np.percentile(e, 95)),
                         "mean_um": float(np.mean(e)) if np.all(np.isfinite(e)) else float("inf"),
                         "n_nan": int((~np.isfinite(got).all(axis=1)).sum())}
            if by_edge:
                rows = []
                for lo, hi in EDGE_BINS:
                    sel = e[(dist >= lo) & (dist < hi)]
                    rows.append({"from_um": float(lo), "to_um": float(hi), "n": int(sel.size),
                                 "median_um": float(np.median(sel)) if sel.size else float("nan"),
                                 "p95_um": float(np.percentile(sel, 95)) if sel.size else float("nan"),
                                 "n_over_50um": int((sel > 50).sum())})
                out[name]["by_edge"] = rows
        return out


def scoring_points(fixed: np.ndarray, spacing=SPACING, n: int = N_POINTS) -> np.ndarray:
    """``n`` voxel centres of ``fixed`` above its 60th percentile, drawn with ``default_rng(1)`` (µm)."""
    thr = np.percentile(fixed, POINT_PERCENTILE)
    cand = np.flatnonzero(fixed > thr)
    rng = np.random.default_rng(POINT_SEED)
    pick = rng.choice(cand, size=min(n, cand.size), replace=False)
    idx = np.column_stack(np.unravel_index(pick, fixed.shape)).astype(float)
    return idx * np.asarray(spacing, float)


def _make_moving(task: GroundTruthTask, block: int = 2_000_000) -> np.ndarray:
    """MOVING(x) = FIXED(T⁻¹(x)) on the fixed grid, linear interpolation, zero outside."""
    fixed = task.fixed.astype(np.float32)
    shape = fixed.shape
    sp = np.asarray(task.spacing, float)
    out = np.empty(shape, np.float32)
    per = max(1, block // (shape[1] * shape[2]))
    jk = np.indices(shape[1:], dtype=np.float64).reshape(2, -1).T
    for s in range(0, shape[0], per):
        e = min(shape[0], s + per)
        idx = np.column_stack([np.repeat(np.arange(s, e, dtype=float), len(jk)), np.tile(jk, (e - s, 1))])
        y = task.T_inv(idx * sp)
        vals = ndi.map_coordinates(fixed, (y / sp).T, order=1, mode="constant", cval=0.0)
        out[s:e] = vals.reshape((e - s,) + shape[1:])
    return out


def _cache_dir() -> Path:
    env = os.environ.get("ATLASREG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "atlasreg" / "groundtruth"


def load_brain(path: str | os.PathLike | None = None) -> np.ndarray:
    import tifffile

    return tifffile.imread(str(path or default_brain_path()))


def parse_case(name) -> tuple[int, dict]:
    """``"3"`` -> ``(3, {})`` (public); ``"random:10"`` / ``"rough:20"`` / ``"issue15:0"`` -> the seed and the
    :data:`CASES` parameters of :func:`make_task`.

    Examples
    --------
    >>> parse_case("rough:20")
    (20, {'affine': 'random', 'node_spacing': 150.0, 'smooth_nodes': 2.0})
    """
    text = str(name)
    kind, _, seed = text.rpartition(":")
    kind = kind or "public"
    if kind not in CASES or not seed.lstrip("-").isdigit():
        raise ValueError(f"a task is SEED or CASE:SEED with CASE one of {', '.join(CASES)}; got {text!r}")
    return int(seed), dict(CASES[kind])


def case_name(seed: int, affine: str = "public", node_spacing: float = NODE_SPACING,
              smooth_nodes: float = SMOOTH_NODES) -> str:
    """The inverse of :func:`parse_case` for the named cases (else a descriptive label)."""
    params = {k: v for k, v in (("affine", affine), ("node_spacing", float(node_spacing)),
                                ("smooth_nodes", float(smooth_nodes)))
              if v != {"affine": "public", "node_spacing": NODE_SPACING, "smooth_nodes": SMOOTH_NODES}[k]}
    for kind, p in CASES.items():
        if p == params:
            return str(seed) if kind == "public" else f"{kind}:{seed}"
    return f"{affine}/grid{node_spacing:g}/sigma{smooth_nodes:g}:{seed}"


def make_task(seed: int = 0, fixed: np.ndarray | None = None, spacing=SPACING, cache: bool = True,
              n_points: int = N_POINTS, *, affine: str = "public", node_spacing: float = NODE_SPACING,
              smooth_nodes: float = SMOOTH_NODES) -> GroundTruthTask:
    """Build (or load from cache) the ground-truth task for ``seed``.

    Parameters
    ----------
    seed : seed of the displacement field (``default_rng(seed)``) and of a random affine; PEERS.md's reference
        task is seed 0 with the defaults.
    fixed : the FIXED array (default: the real light-sheet brain, as stored, ``psl``). Tests may pass a
        downsampled copy with its ``spacing``.
    cache : keep the MOVING volume on disk (it takes about a minute at full size).
    affine : ``"public"`` (PEERS.md's one affine), ``"random"`` (drawn from ``seed``) or ``"issue15"``.
    node_spacing, smooth_nodes : the displacement's B-spline grid (µm) and the Gaussian σ (nodes) of its
        node values (PEERS.md: 250 and 3; the rough variant: 150 and 2).

    Examples
    --------
    >>> task = make_task(0)                                           # doctest: +SKIP
    >>> task.errors(lambda x: task.T_inv(x), task.T)["moving_to_fixed"]["median_um"] < 1e-2  # doctest: +SKIP
    True
    """
    fixed = load_brain() if fixed is None else np.asarray(fixed)
    spacing = tuple(float(s) for s in spacing)
    node_spacing, smooth_nodes = float(node_spacing), float(smooth_nodes)
    A, t = affine_parts(affine, seed)
    coeffs = displacement_coefficients(fixed.shape, spacing, seed, node_spacing, smooth_nodes)
    name = case_name(seed, affine, node_spacing, smooth_nodes)
    task = GroundTruthTask(seed, fixed, None, spacing, coeffs, scoring_points(fixed, spacing, n_points),
                           A=A, translation=t, node_spacing=node_spacing, name=name)
    variant = (affine, node_spacing, smooth_nodes)
    # the public task keeps its original cache key (its construction is unchanged); variants add theirs
    ident = (_VERSION, seed, spacing) if variant == ("public", NODE_SPACING, SMOOTH_NODES) else \
        (_VERSION, seed, spacing, variant)
    key = hashlib.sha256(fixed.tobytes() + repr(ident).encode()).hexdigest()[:16]
    tag = "" if name == str(seed) else "_" + affine + f"_g{node_spacing:g}_s{smooth_nodes:g}"
    path = _cache_dir() / f"moving_seed{seed}{tag}_{key}.npy"
    if cache and path.exists():
        task.moving = np.load(path)
        return task
    task.moving = _make_moving(task)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, task.moving)
        os.replace(tmp, path)
    return task


if __name__ == "__main__":  # build and sanity-check: python benchmarks/groundtruth.py [0 random:10 rough:20 ...]
    import sys
    import time

    for arg in sys.argv[1:] or ["0"]:
        sd, kw = parse_case(arg)
        t0 = time.perf_counter()
        tk = make_task(sd, **kw)
        none = tk.errors(lambda x: x, lambda x: x)["moving_to_fixed"]
        exact = tk.errors(tk.T_inv, tk.T)["moving_to_fixed"]
        print(f"{tk.name}: built in {time.perf_counter() - t0:.1f} s; no registration "
              f"{none['median_um']:.0f}/{none['p95_um']:.0f} um; exact inverse {exact['median_um']:.2g} um")
