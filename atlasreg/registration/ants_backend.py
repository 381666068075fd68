"""The ANTs backend: multi-resolution (rigid →) affine → SyN through ``antsRegistration`` (antspyx).

Each stage is its own ``antsRegistration`` call whose output is saved before the next starts, so a run
can resume from its last finished stage. ANTs' outputs are pull-backs (FIXED points → MOVING points,
CONVENTIONS); ``atlasreg.transforms.files.load_ants_registration`` turns them into the MOVING → FIXED map
with ANTs' exact inverse warp attached.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import AtlasregError
from ..io.atomic import write_atomic
from ..transforms.base import Affine, Transform
from ..volume import Volume

_METRIC = {"MI": "MI", "Mattes": "Mattes", "CC": "CC", "MeanSquares": "MeanSquares"}


def _x(values) -> str:
    return "x".join(str(int(v)) for v in values)


def _metric(name: str, f: str, m: str, p: dict, stage: str, radius: int | None = None) -> str:
    if stage == "syn":
        if name == "CC":
            return f"CC[{f},{m},1,{int(p['syn_radius'] if radius is None else radius)}]"
        if name in ("MI", "Mattes"):
            return f"{name}[{f},{m},1,32]"
        return f"MeanSquares[{f},{m},1,0]"
    if name in ("MI", "Mattes"):
        return f"{name}[{f},{m},1,{int(p['affine_bins'])},Regular,{float(p['affine_sampling'])}]"
    if name == "CC":
        return f"CC[{f},{m},1,2,Regular,{float(p['affine_sampling'])}]"
    return f"MeanSquares[{f},{m},1,0,Regular,{float(p['affine_sampling'])}]"


def write_ants_affine(A: Affine, path: str | os.PathLike) -> str:
    """Write an atlasreg Affine (FIXED -> MOVING points) as the ITK ``.mat`` ANTs takes as initial transform."""
    from ..transforms.files import save_transform

    save_transform(A, path, force=True)
    return str(path)


def _set_itk_threads(n: int) -> None:
    """ITK's thread count for ANTs (0: leave it), set where it can take effect.

    The ITK inside antspyx reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once, at its first use in the process,
    and keeps that count (ANTsPy's advice: set it before importing ``ants``). Set between two calls it changed
    nothing: the same inputs still registered differently from run to run at 1 thread, as they do at 2, and
    identically when it was set first. So the count is set before this process first loads ``ants`` (and the
    variable stays set: it now says what this process's ITK uses); asked for later, and different from what the
    variable says, it cannot apply, and a warning says so.
    """
    import sys
    import warnings

    n = int(n or 0)
    if n <= 0:
        return
    current = os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
    if "ants" not in sys.modules:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(n)
    elif current != str(n):
        warnings.warn(f"threads={n} cannot take effect: ANTs (ITK) is already loaded in this process and keeps the "
                      f"thread count it started with (ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="
                      f"{current or 'unset: all cores'}); set that variable before the first registration",
                      stacklevel=4)


def _run(args: list[str], on_iteration: Callable[[str], None] | None = None,
         level_iterations: list[int] | None = None) -> None:
    import ants

    tap = _IterationTap(on_iteration, level_iterations or []) if on_iteration else None
    try:
        if tap is None:
            ants.registration(args, None)
        else:
            with tap:
                ants.registration(args, None)
    except RuntimeError as exc:  # antspyx reports only an exit code
        raise AtlasregError(f"antsRegistration failed ({exc}); arguments: {' '.join(args)}") from None


_LEVEL_HEADER = re.compile(r"^\s*X*DIAGNOSTIC,Iteration")
_ITERATION = re.compile(r"^\s*\d*DIAGNOSTIC,\s*(\d+),")


class _IterationTap:
    """Iterations done / total per level, read from antsRegistration's verbose output.

    antsRegistration reports its iterations only on the process's own standard output (file descriptor 1, through
    C stdio), so for the length of one call that descriptor is a pipe read here; what ANTs prints there is parsed
    (a ``DIAGNOSTIC,Iteration`` header opens each level, `` NDIAGNOSTIC, k,`` lines are its iterations) and dropped.
    C stdio buffers a pipe, so it is flushed every half second to keep the count live. If the descriptor cannot be
    redirected, the call runs untapped (no iteration counts, nothing else changes).
    """

    def __init__(self, report: Callable[[str], None], level_iterations: list[int]):
        self.report, self.totals = report, list(level_iterations)
        self.level, self.done, self.ok = 0, 0, False

    def _status(self, finished: bool = False) -> str:
        n = self.totals[self.level - 1] if 0 < self.level <= len(self.totals) else "?"
        where = f"level {self.level}/{len(self.totals) or '?'}"
        return f"{where} done after {self.done}/{n} iterations" if finished else f"{where}, iteration {self.done}/{n}"

    def _line(self, line: str) -> None:
        if _LEVEL_HEADER.match(line):
            if self.level:
                self.report(self._status(finished=True))
            self.level, self.done = self.level + 1, 0
        else:
            m = _ITERATION.match(line)
            if m and self.level:
                self.done = int(m.group(1))
                self.report(self._status())

    def _read(self) -> None:
        with os.fdopen(self.r, "r", errors="replace") as fh:
            for line in fh:
                try:
                    self._line(line)
                except Exception:  # a display problem must never break the registration
                    pass

    def _flush(self) -> None:
        while not self.stop.wait(0.5):
            self.libc.fflush(None)

    def __enter__(self):
        import ctypes
        import sys
        import threading

        try:
            sys.stdout.flush()
            self.libc = ctypes.CDLL(None)
            self.libc.fflush(None)
            self.saved = os.dup(1)
            self.r, w = os.pipe()
            os.dup2(w, 1)
            os.close(w)
        except (OSError, AttributeError, ValueError):
            return self
        self.ok = True
        self.stop = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.flusher = threading.Thread(target=self._flush, daemon=True)
        self.reader.start()
        self.flusher.start()
        return self

    def __exit__(self, *exc):
        if not self.ok:
            return
        self.stop.set()
        self.flusher.join()
        self.libc.fflush(None)
        os.dup2(self.saved, 1)  # closes the pipe's write end: the reader sees the end and stops
        os.close(self.saved)
        self.reader.join(timeout=5)
        if self.level:
            self.report(self._status(finished=True))


def syn_levels(params: dict) -> list[tuple[list, list, list, str, int]]:
    """The deformable stage as ``antsRegistration`` SyN stages: ``(iterations, shrink, sigmas, metric, CC radius)``
    each.

    With ``syn_metric_finest`` or ``syn_radius_finest`` set (two or more levels, and another metric or CC radius
    than the coarser levels') the finest level runs as a SyN stage of its own with them. The first stage then
    ends with a 0-iteration level at the finest shrink: ANTs keeps a stage's field at its last level's
    resolution, and two fields on different grids cannot be collapsed into one.

    Examples
    --------
    >>> from atlasreg.registration.presets import get_preset
    >>> [lv[3:] for lv in syn_levels(get_preset("lightsheet-to-atlas", syn_metric="Mattes", syn_metric_finest="CC"))]
    [('Mattes', 1), ('CC', 1)]
    """
    its, shr, smo = (list(params[k]) for k in ("syn_iterations", "syn_shrink", "syn_smooth"))
    metric, radius = params["syn_metric"], int(params["syn_radius"])
    fine_metric = params.get("syn_metric_finest") or metric
    fine_radius = int(params.get("syn_radius_finest") or 0) or radius
    if len(its) < 2 or (fine_metric, fine_radius if fine_metric == "CC" else 0) == \
            (metric, radius if metric == "CC" else 0):
        return [(its, shr, smo, metric, radius)]
    return [(its[:-1] + [0], shr, smo, metric, radius), (its[-1:], shr[-1:], smo[-1:], fine_metric, fine_radius)]


def syn_arguments(params: dict, fs: str, ms: str) -> list[str]:
    """The ``antsRegistration`` arguments of the deformable stage (:func:`syn_levels`); with ``-z 1`` its stages
    collapse into one warp and its inverse, as a single stage would.

    Examples
    --------
    >>> from atlasreg.registration.presets import get_preset
    >>> a = syn_arguments(get_preset("lightsheet-to-lightsheet", syn_radius_finest=2), "F", "M")
    >>> [x for x in a if x.startswith("CC")]
    ['CC[F,M,1,1]', 'CC[F,M,1,2]']
    """
    out = []
    for it, sh, sm, metric, radius in syn_levels(params):
        out += ["-m", _metric(metric, fs, ms, params, "syn", radius),
                "-t", "SyN[%g,%g,%g]" % (params["syn_grad_step"], params["syn_flow_sigma"], params["syn_total_sigma"]),
                "-c", f"[{_x(it)},{params['syn_convergence']:g},8]", "-s", _x(sm) + "vox", "-f", _x(sh)]
    return out


def linear_levels(params: dict, stage: str) -> tuple[list, list, list]:
    """The levels of the rigid or affine stage that iterate: ``(iterations, shrink, smoothing)``.

    The rigid stage shares ``affine_shrink`` / ``affine_smooth``; a level given 0 iterations is left out, since
    ``antsRegistration`` runs one iteration at a level asked for none.

    Examples
    --------
    >>> from atlasreg.registration.presets import get_preset
    >>> linear_levels(get_preset("lightsheet-to-atlas", rigid_iterations=(100, 30, 0)), "rigid")
    ([100, 30], [4, 2], [2, 1])
    """
    its = params["rigid_iterations"] if stage == "rigid" else params["affine_iterations"]
    keep = [k for k, n in enumerate(its) if int(n) > 0]
    return ([int(its[k]) for k in keep], [params["affine_shrink"][k] for k in keep],
            [params["affine_smooth"][k] for k in keep])


def stage_plan(params: dict) -> list[str]:
    """The stages a run will perform, in order (names used for progress and resumable outputs)."""
    plan = []
    if any(int(n) > 0 for n in params["rigid_iterations"]):
        plan.append("rigid")
    if any(int(n) > 0 for n in params["affine_iterations"]):
        plan.append("affine")
    if params["syn_iterations"]:
        plan.append("syn")
    return plan


def register_ants(fixed: Volume, moving: Volume, init: Affine, params: dict, workdir: str | os.PathLike,
                  fixed_mask: np.ndarray | None = None, moving_mask: np.ndarray | None = None,
                  on_stage: Callable[[str, str], None] | None = None,
                  refit_masks: Callable[[Transform], tuple[np.ndarray, np.ndarray] | None] | None = None,
                  probe: bool = False) -> tuple[Transform, dict]:
    """Register working-resolution ``moving`` onto ``fixed``; returns (MOVING → FIXED transform, info).

    ``init`` maps FIXED points to MOVING points. Stage outputs go to ``workdir/<stage>_*``; a stage whose
    ``.done`` marker exists is not run again (resume). ``on_stage(name, "start"|"done"|"skip")`` reports.
    ``refit_masks(pull)``, given the linear stages' result (FIXED → MOVING points), returns (fixed, moving)
    metric masks for a second affine stage (``affine_masked``) before the deformable one, or None for none; with
    ``probe`` it is given the result of a first, coarser deformable stage (``syn_probe``: all levels but the
    finest) instead, a closer alignment. ``fixed_mask`` / ``moving_mask`` restrict the linear stages' metrics, and
    the deformable stages' only with the preset key ``syn_metric_mask`` (on in the presets: on the partial-brain
    benchmark they help at the cut face, see the presets). The refit's masks never reach SyN (with CC they cost
    4 µm of median everywhere; with Mattes, 21.2 / 74.8 -> 20.9 / 77.0 µm on the brain without bulbs and
    cerebellum).
    """
    if on_stage:  # importing ANTs takes seconds on a first run: a stage of its own, so stage times add up
        on_stage("ANTs start-up", "start")
    _set_itk_threads(params.get("threads", 0))  # before ants loads: only then can the count apply
    import ants
    from ants.internal import get_pointer_string

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    f_img, m_img = fixed.to_ants(), moving.to_ants()
    if on_stage:
        on_stage("ANTs start-up", "done")
    fs, ms = get_pointer_string(f_img), get_pointer_string(m_img)
    keep = [f_img, m_img]  # the pointer strings are only valid while these live

    def mask_option(fixed_mask, moving_mask) -> list[str]:
        if fixed_mask is None and moving_mask is None:
            return []
        # the side without a mask gets one that holds everywhere: antsRegistration reads "NULL" as a file name
        # it cannot find (and says so on standard output) before ignoring it
        fixed_mask = np.ones(fixed.shape, bool) if fixed_mask is None else fixed_mask
        moving_mask = np.ones(moving.shape, bool) if moving_mask is None else moving_mask
        fm = ants.from_numpy(np.ascontiguousarray(fixed_mask.astype(np.uint8)), origin=f_img.origin,
                             spacing=f_img.spacing, direction=f_img.direction)
        mm = ants.from_numpy(np.ascontiguousarray(moving_mask.astype(np.uint8)), origin=m_img.origin,
                             spacing=m_img.spacing, direction=m_img.direction)
        keep.extend([fm, mm])
        return ["-x", "[%s,%s]" % (get_pointer_string(fm), get_pointer_string(mm))]

    mask_opt = mask_option(fixed_mask, moving_mask)
    common = ["-z", "1", "--float", "1", "-v", "0", "--random-seed", str(int(params["random_seed"]))]
    current = write_ants_affine(init, work / "init_GenericAffine.mat")
    info = {"stages": {}}
    plan = stage_plan(params)
    import time

    from ..transforms.files import load_ants_registration, load_transform

    def run_stage(stage: str, current: str, mask_opt: list[str]) -> str:
        """One ``antsRegistration`` call from the affine file ``current`` (skipped if done); its affine file."""
        prefix = str(work / f"{stage}_")
        done = Path(prefix + "done")
        if done.exists():
            if on_stage:
                on_stage(stage, "skip")
        else:
            if on_stage:
                on_stage(stage, "start")
            t0 = time.perf_counter()
            args = ["-d", "3", "-r", current]
            if stage in ("rigid", "affine", "affine_masked"):
                its, shrink, smooth = linear_levels(params, "rigid" if stage == "rigid" else "affine")
                level_its = list(its)
                kind = "Rigid" if stage == "rigid" else "Affine"
                args += ["-m", _metric(params["affine_metric"], fs, ms, params, "affine"),
                         "-t", f"{kind}[{float(params['affine_step'])}]",
                         "-c", f"[{_x(its)},1e-6,10]",
                         "-s", _x(smooth) + "vox", "-f", _x(shrink)]
            else:
                p = probe_params if stage == "syn_probe" else params
                args += syn_arguments(p, fs, ms)
                level_its = [n for level in syn_levels(p) for n in level[0]]
            args += mask_opt + common + ["-o", f"[{prefix}]"]
            if on_stage:  # verbose, so that the tap sees ANTs' iterations (nothing else it prints is shown)
                args[args.index("-v") + 1] = "1"
            _run(args, (lambda status, stage=stage: on_stage(stage, status)) if on_stage else None, level_its)
            _atomic_done(done, time.perf_counter() - t0)
            if on_stage:
                on_stage(stage, "done")
        info["stages"][stage] = {"seconds": float(done.read_text().split()[0])}
        # with -z 1 the affine part (initial transform included) is collapsed into 0GenericAffine.mat
        return prefix + "0GenericAffine.mat"

    def syn_pair(prefix: str) -> tuple[list[str], list[str]]:
        p = str(work / prefix)
        return [p + "1Warp.nii.gz", p + "0GenericAffine.mat"], [p + "0GenericAffine.mat", p + "1InverseWarp.nii.gz"]

    # the probe: the deformable stage without its finest level, so that refit_masks sees the sample closely aligned
    probe_params = {**params, **{k: tuple(params[k])[:-1] for k in ("syn_iterations", "syn_shrink", "syn_smooth")}}
    for stage in plan:
        if stage == "syn" and refit_masks is not None and "affine" in plan:
            if probe and len(params["syn_iterations"]) >= 2:
                run_stage("syn_probe", current, mask_opt if params["syn_metric_mask"] else [])
                pull = load_ants_registration(syn_pair("syn_probe_"), fixed=fixed.space,
                                              moving=moving.space).inverse()
            else:
                pull = load_transform(current, src=fixed.space, dst=moving.space)
            masks = refit_masks(pull)
            if masks is not None:  # the affine again, looking only where the new masks let it
                current = run_stage("affine_masked", current, mask_option(*masks))
        current = run_stage(stage, current, mask_opt if stage != "syn" or params["syn_metric_mask"] else [])
    del keep
    if plan and plan[-1] == "syn":
        fwd, inv = syn_pair("syn_")
    else:
        fwd, inv = [current], [current]
    # moving -> fixed, with ANTs' exact inverse (fixed -> moving, y = A(x + u(x))) attached
    return load_ants_registration((fwd, inv), fixed=fixed.space, moving=moving.space), info


def _atomic_done(path: Path, seconds: float) -> None:
    write_atomic(path, f"{seconds:.3f}\n", force=True)
