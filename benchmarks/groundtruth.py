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

Used by ``benchmarks/bench_registration.py``, other benchmarks and the tests::

    from benchmarks.groundtruth import make_task
    task = make_task(seed=0)            # task.fixed, task.moving (numpy, psl), task.T(y), task.points
    err = task.errors(map_moving_to_fixed, map_fixed_to_moving)

The generated MOVING volume takes a minute at full size, so it is cached (``ATLASREG_CACHE`` or
``~/.cache/atlasreg/groundtruth``) keyed by seed, shape and a hash of this construction.
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


def data_dir() -> Path:
    env = os.environ.get("ATLASREG_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def default_brain_path() -> Path:
    return data_dir() / "lightsheet" / "brain_psl_50x40x40um.tif"


def affine_matrix() -> np.ndarray:
    """``A = R @ diag(0.92, 1.05, 0.97)``, R a rotation of 8° in the plane of axes 1 and 2."""
    a = math.radians(ANGLE_DEG)
    R = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    return R @ np.diag(SCALES)


def displacement_coefficients(shape, spacing, seed: int) -> np.ndarray:
    """The node values of ``u``: (3, *grid) float64, max |component| = 250 µm."""
    extent = np.asarray(shape, float) * np.asarray(spacing, float)
    grid = tuple(int(math.ceil(e / NODE_SPACING)) for e in extent)
    rng = np.random.default_rng(seed)
    comps = [ndi.gaussian_filter(rng.standard_normal(grid), SMOOTH_NODES) for _ in range(3)]
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
    _filtered: list = field(default_factory=list, repr=False)

    @property
    def center(self) -> np.ndarray:
        return np.asarray(self.fixed.shape, float) * np.asarray(self.spacing, float) / 2.0

    def u(self, y: np.ndarray) -> np.ndarray:
        """Displacement ``u(y)`` (N, 3) µm: order-3 B-spline at ``y / 250``, mode nearest."""
        if not self._filtered:  # prefilter once; map_coordinates then only evaluates
            self._filtered.extend(ndi.spline_filter(c, order=3, mode="nearest") for c in self.coeffs)
        q = (np.asarray(y, float) / NODE_SPACING).T
        return np.stack([ndi.map_coordinates(f, q, order=3, mode="nearest", prefilter=False)
                         for f in self._filtered], axis=1)

    def T(self, y) -> np.ndarray:
        """The true map FIXED point -> MOVING point (µm)."""
        y = np.asarray(y, float)
        c = self.center
        return (y - c) @ affine_matrix().T + c + np.asarray(TRANSLATION) + self.u(y)

    def T_inv(self, x, tol: float = 1e-3, max_iter: int = 100) -> np.ndarray:
        """MOVING point -> FIXED point, by fixed-point iteration ``y = A⁻¹(x - c - t - u(y)) + c``."""
        x = np.asarray(x, float)
        c = self.center
        Ainv = np.linalg.inv(affine_matrix())
        base = x - c - np.asarray(TRANSLATION)
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

    def errors(self, moving_to_fixed: Callable | None = None,
               fixed_to_moving: Callable | None = None) -> dict:
        """Median and p95 error (µm) of an estimate in both directions, on the scoring points.

        ``moving_to_fixed(points)`` maps MOVING points to FIXED; ``fixed_to_moving`` the reverse. NaN results
        (points mapped outside a field) count as infinitely wrong.
        """
        P = self.points
        TP = self.T(P)
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


def make_task(seed: int = 0, fixed: np.ndarray | None = None, spacing=SPACING, cache: bool = True,
              n_points: int = N_POINTS) -> GroundTruthTask:
    """Build (or load from cache) the ground-truth task for ``seed``.

    Parameters
    ----------
    seed : seed of the displacement field (``default_rng(seed)``); PEERS.md's reference task is seed 0.
    fixed : the FIXED array (default: the real light-sheet brain, as stored, ``psl``). Tests may pass a
        downsampled copy with its ``spacing``.
    cache : keep the MOVING volume on disk (it takes about a minute at full size).

    Examples
    --------
    >>> task = make_task(0)                                           # doctest: +SKIP
    >>> task.errors(lambda x: task.T_inv(x), task.T)["moving_to_fixed"]["median_um"] < 1e-2  # doctest: +SKIP
    True
    """
    fixed = load_brain() if fixed is None else np.asarray(fixed)
    spacing = tuple(float(s) for s in spacing)
    coeffs = displacement_coefficients(fixed.shape, spacing, seed)
    task = GroundTruthTask(seed, fixed, None, spacing, coeffs, scoring_points(fixed, spacing, n_points))
    key = hashlib.sha256(fixed.tobytes() + repr((_VERSION, seed, spacing)).encode()).hexdigest()[:16]
    path = _cache_dir() / f"moving_seed{seed}_{key}.npy"
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


if __name__ == "__main__":  # build and sanity-check the tasks: python benchmarks/groundtruth.py [seeds...]
    import sys
    import time

    for sd in [int(a) for a in sys.argv[1:]] or [0]:
        t0 = time.perf_counter()
        tk = make_task(sd)
        none = tk.errors(lambda x: x, lambda x: x)["moving_to_fixed"]
        exact = tk.errors(tk.T_inv, tk.T)["moving_to_fixed"]
        print(f"seed {sd}: built in {time.perf_counter() - t0:.1f} s; no registration "
              f"{none['median_um']:.0f}/{none['p95_um']:.0f} um; exact inverse {exact['median_um']:.2g} um")
