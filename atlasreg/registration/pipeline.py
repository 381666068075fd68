"""``register``: checks → reorientation → working images (normalised, masked) → orientation search →
initialisation → backend (rigid/affine/deformable) → a :class:`RegistrationResult` mapping moving → fixed.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from ..io.atomic import write_atomic
from ..spaces import Space, opposite_side
from ..transforms.base import Affine, Sequence
from ..volume import Volume
from . import preprocess as pp
from .presets import get_preset
from .progress import with_logging
from .result import RegistrationResult

log = logging.getLogger("atlasreg.registration")

BACKENDS = ("ants", "sitk")

#: progress callback: (stage, status) with status "start", "done" or "skip"
Progress = Callable[[str, str], None]


def _canonical(vol: Volume, name: str) -> tuple[Volume, Affine | None]:
    """The volume in a frame with origin 0 and identity direction (``p = spacing * i``), and the map there.

    Backends then see both images in frames whose axes agree with their orientation codes.
    """
    if np.allclose(vol.origin, 0) and np.allclose(vol.direction, np.eye(3)):
        return vol, None
    sp = Space(name, vol.unit, vol.orientation)
    M = np.diag(list(vol.voxel_size) + [1.0]) @ np.linalg.inv(vol.affine)
    return Volume(vol.data, vol.voxel_size, space=sp), Affine(M, vol.space, sp)


def _working_mask(mask, vol_full: Volume, work: Volume) -> np.ndarray:
    w = pp.to_working(vol_full, float(work.voxel_size[0]), data=np.asarray(mask, np.float32))
    return w.numpy() > 0.5


def register(moving: Volume, fixed: Volume, preset: str = "lightsheet-to-atlas", backend: str = "ants", *,
             moving_mask=None, fixed_mask=None, workdir: str | os.PathLike | None = None,
             progress: Progress | None = None, initial_transform=None, initial_position=None,
             **overrides) -> RegistrationResult:
    """Register ``moving`` (e.g. a cleared brain) onto ``fixed`` (e.g. an atlas template).

    Parameters
    ----------
    moving, fixed : Volume
        Both with orientation codes (``Volume(..., orientation="psl")``) and real voxel sizes, in different
        spaces of the same unit. The moving volume is reoriented to the fixed one's code exactly first.
    preset : str
        A row of :data:`atlasreg.registration.presets.PRESETS`: ``"lightsheet-to-atlas"`` (a sample onto an
        atlas template), ``"lightsheet-to-lightsheet"`` (onto a brain or template imaged the same way),
        ``"fast"``, ``"affine"``.
    backend : {"ants", "sitk"}
        ANTs (affine + SyN) or SimpleITK (affine + B-spline), same call, same result type.
    moving_mask, fixed_mask : bool arrays or Volumes on each volume's grid, optional
        Where the brain is; default: an automatic mask (preset key ``mask``).
    workdir : folder for the stage outputs. With the same folder a rerun resumes after the last finished
        stage (each stage's transform is saved there as it completes). Default: a temporary folder.
    initial_transform : Transform or path, optional
        Where the sample lies, as a moving → fixed map (an Affine or any transform; one named the other way
        round is inverted) or a transform file (ITK/ANTs files hold the pull-back fixed → moving, as ITK writes
        them; NGFF ``.json`` files say their direction). Replaces the automatic initialisation (and, for part
        of a brain, the position search).
    initial_position : 3 numbers, optional
        Where the centre of the moving image lies in the fixed image (µm, the fixed volume's frame): an
        initial translation, for a piece the automatic initialisation cannot place.
    progress : callable(stage, status), optional
        Called as each stage starts and ends. Every stage is also logged on the ``atlasreg.registration``
        logger (INFO, one line with its time as it ends): ``logging.basicConfig(level=logging.INFO)`` shows them.
    **overrides : any preset key, e.g. ``syn_iterations=(50, 20)``, ``working_spacing=100``.

    Returns
    -------
    RegistrationResult
        ``.transform`` maps moving points to fixed points; ``.transform.inverse()`` the reverse.

    Raises
    ------
    InputError
        Before any long computation: missing voxel size or orientation, empty/constant images, masks that
        select nothing or no brain, same space names, different units, and (``orientation_search="error"``)
        an orientation code another code fits far better (:class:`OrientationError`).

    Examples
    --------
    >>> import atlasreg as ar, tifffile
    >>> sample = ar.Volume(tifffile.imread("brain.tif"), voxel_size=(50, 40, 40), orientation="psl",
    ...                    space="sample")                                          # doctest: +SKIP
    >>> res = ar.register(sample, atlas.reference)                                  # doctest: +SKIP
    >>> res.transform.map_points([[6000.0, 3000.0, 5000.0]])   # sample µm -> atlas µm  # doctest: +SKIP
    """
    t_start = time.perf_counter()
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}", field="backend")
    params = get_preset(preset, **overrides)
    note = with_logging(progress)

    # -- checks (cheap, before anything long) --------------------------------------------------
    pp.check_volume(moving, "moving")
    pp.check_volume(fixed, "fixed")
    for vol, name in ((moving, "moving"), (fixed, "fixed")):
        if vol.orientation is None:
            raise InputError(f"the {name} volume has no orientation code: give it as Volume(..., orientation='psl') "
                             "or --orientation (BrainGlobe origin code, e.g. 'psl' for a sample, 'asr' for the "
                             "Allen CCF)", field="orientation")
        pp.check_voxel_size(vol, name)
    if moving.space.name == fixed.space.name:
        raise InputError(f"moving and fixed are both in space {moving.space.name!r}: name them apart (e.g. "
                         "space='sample' and space='ccf') so the transform says which way it maps", field="space")
    if moving.unit != fixed.unit:
        raise InputError(f"moving is in {moving.unit} and fixed in {fixed.unit}: express both in one unit "
                         "(Volume.in_unit)", field="unit")
    m_user = pp.check_mask(moving_mask, moving, "moving_mask") if moving_mask is not None else None
    report = None
    f_user = pp.check_mask(fixed_mask, fixed, "fixed_mask") if fixed_mask is not None else None

    # -- reorientation (exact) and canonical frames ----------------------------------------------
    note("working images", "start")
    code = fixed.orientation
    m_space = Space(f"{moving.space.name}__{code}", moving.unit, code)
    R = moving.reorient_transform(code, m_space)
    m_re = moving.reorient(code, m_space)
    if m_user is not None:
        m_user = Volume(m_user, moving.voxel_size, moving.origin, moving.direction, moving.space,
                        ).reorient(code, m_space).numpy()
    f_c, C = _canonical(fixed, f"{fixed.space.name}__canonical")

    # -- working images ----------------------------------------------------------------------------
    ws = float(params["working_spacing"])
    f_w, m_w = pp.to_working(f_c, ws), pp.to_working(m_re, ws)
    note("working images", "done")
    # -- orientation search: a second, catches a wrong code before the long run ---------------------
    if params["orientation_search"] != "off":
        from .orientation import OrientationError, search_orientation

        note("orientation", "start")
        # on the working images (the moving one put back in its given axis order): no second pass over the
        # full-resolution data
        report = search_orientation(m_w.reorient(moving.orientation, moving.space.name + "__given"), f_w,
                                    params["orientation_spacing"], params["orientation_margin"])
        note("orientation", "done")
        if report.flagged:
            # the search compares with the whole fixed image: part of a brain (a hemisphere, a slab) can fit
            # another code better without the code being wrong, so for a partial extent it only warns
            if params["orientation_search"] == "error" and params["extent"] == "whole":
                raise OrientationError(report.message(), field="orientation")
            partial = "" if params["extent"] == "whole" else \
                f" (extent {params['extent']!r}: the search compares with the whole fixed image, so for part of " \
                "a brain it only warns)"
            warnings.warn(report.message() + partial, stacklevel=2)

    note("masks and initialisation", "start")
    if f_user is not None:
        f_mask = _working_mask(f_user, f_c, f_w)
    elif params["mask"] == "auto":
        f_mask = pp.auto_mask(f_w.numpy(), f_w.voxel_size, params["mask_dilate"])
    else:
        f_mask = None
    if m_user is not None:
        m_mask = _working_mask(m_user, m_re, m_w)
    elif params["mask"] == "auto":
        m_mask = pp.auto_mask(m_w.numpy(), m_w.voxel_size, params["mask_dilate"])
    else:
        m_mask = None
    # where the user says the sample lies, and a partial brain (hemisphere, slab): the metrics compare the
    # sample with the part of the fixed image it covers, up to its cut faces (atlasreg.registration.extent)
    from . import extent as ex

    tissue_points = None if initial_transform is None else \
        m_w.index_to_physical(np.argwhere(m_mask if m_mask is not None else m_w.numpy() > 0)[::7])
    user_init = ex.user_initial(initial_transform, initial_position, moving, fixed, R, C, m_re, tissue_points)
    extent_what, setup = "whole brain", None
    look_for_missing = params["missing_parts"] == "always" or \
        (params["missing_parts"] == "auto" and params["extent"] == "auto")
    # where the backend's fixed grid gets its margin (below)
    pad_where = params["pad_faces"] if params["pad_faces"] != "auto" else \
        "tissue" if params["extent"] == "whole" else "all"
    f_t = None
    if params["extent"] != "whole" or look_for_missing or (pad_where == "tissue" and params["pad"] > 0):
        # the fixed tissue itself (undilated): its extent, its cut faces and the faces it reaches decide
        f_t = pp.auto_mask(f_w.numpy(), f_w.voxel_size, 0.0) if f_user is None else f_mask
    if params["extent"] != "whole" or look_for_missing:
        m_t = pp.auto_mask(m_w.numpy(), m_w.voxel_size, 0.0) if m_user is None else m_mask
    if params["extent"] != "whole":
        setup = ex.partial_setup(params["extent"], f_w, f_t, f_mask, m_w, m_t, m_mask,
                                 init_method=params["init"], init=user_init)
        if setup is not None:
            f_mask, m_mask, extent_what = setup.fixed_mask, setup.moving_mask, setup.what
    lo, hi = params["normalise"]
    f_n = f_w.with_data(pp.normalise(f_w.numpy(), lo, hi, f_mask))
    m_n = m_w.with_data(pp.normalise(m_w.numpy(), lo, hi, m_mask))
    if setup is not None and setup.init is not None:
        init = setup.init
    elif user_init is not None:
        init = user_init
    else:
        init = pp.initial_affine(f_n, m_n, f_mask, m_mask, params["init"])
    if (setup is not None or user_init is not None) and f_mask is not None and m_mask is not None:
        ex.check_overlap(init, f_n, f_mask, m_n, m_mask, where=f"fixed image's {extent_what}")
    metric_masks = params["metric_mask"] or setup is not None
    # the backend's fixed grid: padded (room for the field, not image content, so after the initialisation);
    # metrics and QC stay on the unpadded one
    pad_faces = None
    if pad_where == "tissue" and params["pad"] > 0:
        # only where the fixed tissue reaches the grid's outermost layer, where the field needs room; elsewhere
        # the margin cost the real brain -> CCF a little on every measure (presets: pad_faces)
        pad_faces = pp.faces_reached(f_t, f_w.voxel_size, ws)

    def on_reg_grid(mask: np.ndarray) -> np.ndarray:
        """A mask of the fixed working grid on the backend's (padded) grid."""
        if params["pad"] <= 0:
            return mask
        return pp.pad(f_n.with_data(mask.astype(np.uint8)), params["pad"], faces=pad_faces).numpy().astype(bool)

    f_reg = pp.pad(f_n, params["pad"], faces=pad_faces) if params["pad"] > 0 else f_n
    f_mask_reg = None if f_mask is None else on_reg_grid(f_mask)
    note("masks and initialisation", "done")

    # -- backend -------------------------------------------------------------------------------------
    tmp, found = None, {}
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="atlasreg-reg-")
        workdir = tmp.name
    else:
        _prepare_workdir(Path(workdir), backend, params, f_n, m_n, init)
    try:
        if backend == "ants":
            from .ants_backend import register_ants

            m_metric = m_mask if metric_masks else None
            if params["moving_fov_mask"]:  # never compare the fixed image with what lies beyond the sample's edge
                inside = pp.image_interior(m_n.shape)
                m_metric = inside if m_metric is None else m_metric & inside
            refit_masks = None
            if look_for_missing:
                def refit_masks(pull):
                    """The linear stages again without the fixed tissue the sample lacks (found through ``pull``)."""
                    missing = ex.missing_parts(pull, f_n, f_t, m_n, m_t, params["missing_tolerance"])
                    found["missing"] = ex.describe_missing(missing, f_t, f_n.orientation)
                    if not missing.any():
                        return None
                    f_keep, m_keep = ex.missing_masks(pull, f_n, missing, m_n, m_t)
                    if metric_masks and f_mask is not None:
                        f_keep &= f_mask
                    return on_reg_grid(f_keep), (m_keep if m_metric is None else m_keep & m_metric)
            core, info = register_ants(f_reg, m_n, init, params, workdir,
                                       f_mask_reg if metric_masks else None, m_metric, on_stage=note,
                                       refit_masks=refit_masks, probe=params["missing_probe"])
        else:
            from .sitk_backend import register_sitk

            core, info = register_sitk(f_reg, m_n, init, params, workdir, on_stage=note)
    finally:
        if tmp is not None:
            tmp.cleanup()

    # moving -> moving reoriented -> fixed canonical -> fixed, with the inverse chain attached
    steps = [R, core] + ([C.inverse()] if C is not None else [])
    back = [(C if C is not None else None), core.inverse(), R.inverse()]
    T = Sequence(steps).with_inverse(Sequence([b for b in back if b is not None]))

    note("metrics", "start")
    metrics = _metrics(T, f_n, m_n, f_mask, core, init, C)
    note("metrics", "done")
    metrics["seconds"] = round(time.perf_counter() - t_start, 2)
    metrics["extent"] = extent_what
    metrics["fixed_margin"], metrics["fixed_margin_faces"] = _margin_record(f_n, f_reg, pad_faces)
    if found.get("missing"):
        metrics["extent"] += f"; missing: {found['missing']} (the affine fitted again without them)"
    if user_init is not None:
        metrics["initialisation"] = "given (initial_position)" if initial_position is not None else \
            "given (initial_transform)"
    metrics["stage_seconds"] = {k: round(v["seconds"], 2) for k, v in info.get("stages", {}).items()}
    if report is not None:
        metrics["orientation"] = {"given": report.given, "best": report.best,
                                  "given_score": report.given_score, "best_score": report.best_score,
                                  "flagged": report.flagged}
    log.info("registered %s -> %s in %.1f s", moving.space.name, fixed.space.name, metrics["seconds"])
    result_info = {"moving_orientation": moving.orientation, "fixed_orientation": fixed.orientation}
    if "inverse_field" in info:  # the SimpleITK backend's sampled inverse: how many nodes were zero-filled
        result_info["inverse_field"] = info["inverse_field"]
    return RegistrationResult(T, moving.grid, fixed.grid, metrics, params, backend, result_info,
                              qc_images=(f_n, m_n), moving_volume=moving, fixed_volume=fixed)


def _prepare_workdir(work: Path, backend: str, params: dict, f_n: Volume, m_n: Volume, init: Affine) -> None:
    """Resume only what belongs to this run: a fingerprint of the inputs and parameters is kept in the work
    folder; stage outputs of a different run there are removed (they would resume the wrong registration)."""
    import hashlib
    import json
    import shutil

    h = hashlib.sha256()
    for a in (f_n.numpy(), m_n.numpy()):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(np.round(init.matrix, 6).tobytes())
    key = {"backend": backend, "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()
                                          if k not in ("orientation_search", "threads")},
           "data": h.hexdigest()}
    fp = work / "fingerprint.json"
    if work.exists() and fp.exists():
        try:
            same = json.loads(fp.read_text()) == json.loads(json.dumps(key))
        except ValueError:
            same = False
        if same:
            return
        log.info("%s holds stages of another run: starting over", work)
    if work.exists():
        for child in work.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    work.mkdir(parents=True, exist_ok=True)
    write_atomic(fp, json.dumps(key, indent=1), force=True)


def _margin_record(grid: Volume, padded: Volume, faces: np.ndarray | None) -> tuple[float, str]:
    """The fixed grid's margin as the result records it, from the grids themselves: its width (in the fixed
    grid's unit, whole working voxels) and the faces that got it, named by the orientation code's letters
    (``"p"``: the posterior face; ``"0-"``, ``"0+"`` by axis without a code)."""
    added = np.array(padded.shape) - np.array(grid.shape)
    if not added.any():
        return 0.0, ""
    sides = np.ones((3, 2), bool) if faces is None else np.asarray(faces, bool)
    ax = int(np.argmax(added > 0))
    width = float(added[ax] / sides[ax].sum() * grid.voxel_size[ax])
    code = grid.orientation
    names = [(code[a] if side == 0 else opposite_side(code[a])) if code else f"{a}{'-+'[side]}"
             for a in range(3) for side in range(2) if sides[a, side]]
    return width, ",".join(names)


def _metrics(T, f_n: Volume, m_n: Volume, f_mask, core, init, C) -> dict:
    """Cheap numbers on the working grid: correlation before (initialisation only) and after, and the
    inverse consistency of the two directions."""
    from ..volume import resample
    from ..qc.metrics import ncc

    pull = core.inverse()  # fixed canonical -> moving reoriented
    after = resample(m_n, pull, f_n.grid)
    before = resample(m_n, init, f_n.grid)
    f = f_n.numpy()
    out = {"ncc_after": round(float(ncc(f, after, f_mask)), 4), "ncc_initial": round(float(ncc(f, before, f_mask)), 4)}
    idx = np.argwhere(f_mask) if f_mask is not None else np.argwhere(np.ones(f.shape, bool))
    rng = np.random.default_rng(0)
    idx = idx[rng.choice(len(idx), size=min(5000, len(idx)), replace=False)]
    p = f_n.index_to_physical(idx)
    back = core.map_points(pull.map_points(p))
    err = np.linalg.norm(back - p, axis=1)
    err = err[np.isfinite(err)]
    if err.size:
        out["inverse_consistency_median_um"] = round(float(np.median(err)), 3)
        out["inverse_consistency_p95_um"] = round(float(np.percentile(err, 95)), 3)
    return out
