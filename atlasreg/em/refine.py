"""Intensity refinement of a landmark fit EM → light-sheet, kept only if held-out landmarks agree.

Landmarks bridge the 1000× scale gap; intensity can then polish the fit where
the EM, downsampled to light-sheet resolution, and the light-sheet crop look
alike. The refinement:

1. warps the (downsampled) EM into the light-sheet crop's grid through the
   landmark fit (anti-aliased first where the EM is still finer), and takes
   the block's footprint there, eroded by a voxel, as the metric mask;
2. registers the crop (fixed) with the warped EM (moving) in SimpleITK:
   a correction ``C`` (affine, rigid, or affine then B-spline) starting from
   the identity, i.e. from the landmark fit, with Mattes mutual information
   (robust to the contrast change between modalities) inside the mask;
3. composes the refined map EM → light-sheet = ``C⁻¹ ∘ fit``;
4. measures the error at held-out landmark pairs (never used in the fit)
   before and after, and keeps the landmark fit, with a warning, if the
   refinement makes their median error worse.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import AtlasregError, InputError
from ..spaces import Space
from ..transforms.base import Affine, Sequence, Transform, as_points
from ..transforms.sitk_bridge import affine_to_sitk, linear_matrix, sampled_field
from ..volume import Volume, warp
from .crop import em_to_lm_mapper

MODELS = ("rigid", "affine", "bspline")
RELAXATION = 0.6


@dataclass
class RefineResult:
    """What the refinement did, and which transform to use.

    Attributes
    ----------
    transform : Transform
        EM → light-sheet: the refined map if it passed the held-out check, else the landmark fit.
    accepted : bool
        Whether the refinement was kept.
    refined, landmark_fit : Transform
        Both candidates (EM → light-sheet).
    heldout_before, heldout_after : (N,) arrays
        Held-out landmark errors (light-sheet unit) of the landmark fit and of the refined map.
    metric_before, metric_after : float
        Mattes mutual information inside the mask (lower is better) at the start and the end.
    model, unit, seconds, message
    """

    transform: Transform
    accepted: bool
    refined: Transform
    landmark_fit: Transform
    heldout_before: np.ndarray
    heldout_after: np.ndarray
    metric_before: float
    metric_after: float
    model: str
    unit: str
    seconds: float
    message: str = ""
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        def stats(e):
            return {"median": float(np.median(e)), "mean": float(np.mean(e)), "p95": float(np.percentile(e, 95)),
                    "max": float(np.max(e))}

        return {"accepted": self.accepted, "model": self.model, "unit": self.unit,
                "heldout_before": stats(self.heldout_before), "heldout_after": stats(self.heldout_after),
                "heldout_before_each": self.heldout_before.tolist(), "heldout_after_each": self.heldout_after.tolist(),
                "metric_before": self.metric_before, "metric_after": self.metric_after,
                "seconds": round(self.seconds, 2), "message": self.message, **self.info}

    def summary(self) -> str:
        b, a = np.median(self.heldout_before), np.median(self.heldout_after)
        verdict = "kept the refinement" if self.accepted else "kept the landmark fit"
        return (f"{self.model} refinement: held-out landmark median error {b:.4g} -> {a:.4g} {self.unit} "
                f"({len(self.heldout_before)} pairs); MI {self.metric_before:.4f} -> {self.metric_after:.4f}; "
                f"{verdict}")


def _heldout(points, name) -> np.ndarray:
    p = as_points(points, name)
    if not np.all(np.isfinite(p)):
        raise InputError(f"{name} has NaN or inf coordinates", field=name)
    return p


def _antialias(em: Volume, mapper, lm: Volume, psf_sigma=None) -> Volume:
    """Gaussian low-pass of the EM: anti-aliasing where its voxels (seen in the light-sheet frame) are finer than
    the crop's, and the light-sheet PSF (σ per axis, light-sheet unit) where it is known, so both images have
    about the same resolution (EM axis ``a`` is taken to lie along light-sheet axis ``a``, as after small rotations)."""
    from scipy.ndimage import gaussian_filter

    c = em.index_to_physical((np.asarray(em.shape, float)[None] - 1) / 2)[0]
    d = em.direction * em.voxel_size[None, :]  # columns: physical step of one voxel along each EM axis
    p = mapper(np.vstack([c, c + d.T]))
    size_in_lm = np.linalg.norm(p[1:] - p[0], axis=1)  # one EM voxel, in light-sheet units, per EM axis
    ratio = float(np.min(lm.voxel_size)) / size_in_lm
    sigma = 0.5 * np.sqrt(np.maximum(ratio ** 2 - 1.0, 0.0))
    if psf_sigma is not None:
        psf = np.broadcast_to(np.asarray(psf_sigma, float), (3,))
        if not np.all(np.isfinite(psf)) or np.any(psf < 0):
            raise InputError(f"psf_sigma must be lengths >= 0 in {lm.unit}, got {psf.tolist()}", field="psf_sigma")
        sigma = np.sqrt(sigma ** 2 + (psf / size_in_lm) ** 2)
    if np.all(sigma < 0.2):
        return em
    data = gaussian_filter(em.numpy().astype(np.float32), sigma, mode="nearest")
    return Volume(data, em.voxel_size, em.origin, em.direction, em.space)


def _normalise(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a[mask], [0.5, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)


def _sitk(vol: Volume, data: np.ndarray):
    import SimpleITK as sitk

    return sitk.Cast(Volume(data, vol.voxel_size, vol.origin, vol.direction, vol.space).to_sitk(),
                     sitk.sitkFloat32)


def refine_landmark_fit(em: Volume, lm: Volume, landmark_fit: Transform, heldout_src, heldout_dst, *,
                        model: str = "affine", psf_sigma=None, mask=None, iterations: int = 200, shrink=(2, 1),
                        smooth=(1.0, 0.0), bins: int = 32, bspline_nodes: int = 3, bspline_iterations: int = 30,
                        tolerance: float = 0.0, seed: int = 1, threads: int = 2) -> RefineResult:
    """Refine an EM → light-sheet landmark fit by masked intensity registration; keep it only if held-out landmarks agree.

    Parameters
    ----------
    em : Volume
        The EM block at about light-sheet resolution (a pyramid level,
        :meth:`Pyramid.level` with :meth:`Pyramid.level_for`), in the space
        the landmark fit starts from (any unit).
    lm : Volume
        The light-sheet crop around the block (:func:`crop_lm`), in the space the fit ends in.
    landmark_fit : Transform
        EM → light-sheet (e.g. :func:`atlasreg.fit_landmarks`); the refinement starts from it.
    heldout_src, heldout_dst : (N, 3) arrays
        Landmark pairs NOT used in the fit (EM unit of ``landmark_fit.src``,
        light-sheet unit of ``landmark_fit.dst``), at least 3.
    model : {"affine", "rigid", "bspline"}
        The correction: affine (12 parameters), rigid, or affine then a
        B-spline with ``bspline_nodes`` mesh cells per axis (``bspline_iterations`` L-BFGS-B iterations).
    psf_sigma : float or 3 floats, optional
        σ of the light-sheet point-spread function per axis (light-sheet unit of ``lm``); the EM is blurred
        by it so both images have the same resolution. Recommended: without it the metric's optimum can sit
        about a voxel off.
    mask : bool array on ``lm``'s grid, optional
        Where the light-sheet crop is usable; intersected with the EM footprint.
    iterations, shrink, smooth, bins
        Optimiser iterations, the multi-resolution pyramid (shrink factors,
        smoothing σ in voxels), Mattes MI histogram bins.
    tolerance : float
        Accept the refinement if its held-out median error is at most
        ``(1 + tolerance)`` times the landmark fit's (default: not worse at all).
    seed, threads
        Metric sampling seed; ITK threads.

    Returns
    -------
    RefineResult
        ``.transform`` to use, ``.accepted``, held-out errors before/after, metric before/after.

    Raises
    ------
    InputError
        Spaces that do not chain, fewer than 3 held-out pairs, an EM block
        that covers too little of the crop, an unknown model.

    Examples
    --------
    >>> res = refine_landmark_fit(em_level, lm_crop, fit, held_em, held_lm)        # doctest: +SKIP
    >>> res.accepted, res.summary()                                                 # doctest: +SKIP
    """
    import SimpleITK as sitk
    from scipy.ndimage import binary_erosion

    t0 = time.perf_counter()
    if model not in MODELS:
        raise InputError(f"unknown refinement model {model!r}; use one of {MODELS}", field="model")
    for v, name in ((em, "em"), (lm, "lm")):
        if not isinstance(v, Volume):
            raise InputError(f"{name} must be a Volume, got {type(v).__name__}", field=name)
    if not isinstance(landmark_fit, Transform):
        raise InputError(f"landmark_fit must be a Transform, got {type(landmark_fit).__name__}",
                         field="landmark_fit")
    mapper = em_to_lm_mapper(landmark_fit, em.space, lm.space)
    T = mapper.transform  # EM -> LM in the transform's own units
    hs, hd = _heldout(heldout_src, "heldout_src"), _heldout(heldout_dst, "heldout_dst")
    if len(hs) != len(hd):
        raise InputError(f"{len(hs)} held-out source points but {len(hd)} destinations", field="heldout_dst")
    if len(hs) < 3:
        raise InputError(f"the held-out check needs at least 3 landmark pairs not used in the fit, got {len(hs)}",
                         field="heldout_src")
    if np.iterable(shrink) and np.iterable(smooth) and len(shrink) != len(smooth):
        raise InputError("shrink and smooth need one entry per level", field="shrink")

    # 1. the EM in the crop's grid through the landmark fit, and its footprint there; all lengths in T's units
    em_aa = _antialias(em, mapper, lm, psf_sigma)
    em_u = em_aa if em_aa.unit == T.src.unit else em_aa.in_unit(T.src.unit)
    lm = lm if lm.unit == T.dst.unit else lm.in_unit(T.dst.unit)
    grid = lm.grid
    moving = warp(em_u, T, grid, fill=np.nan, dtype=np.float32).numpy()
    foot = np.isfinite(moving)
    foot = binary_erosion(foot, iterations=1) if foot.sum() > 64 else foot
    if mask is not None:
        m = np.asarray(mask, bool)
        if m.shape != lm.shape:
            raise InputError(f"mask shape {m.shape} differs from the light-sheet crop's {lm.shape}", field="mask")
        foot &= m
    if foot.sum() < 512:
        raise InputError(f"the EM block covers only {int(foot.sum())} voxels of the light-sheet crop (need 512): "
                         "use a finer crop, a larger block, or check the transform", field="em")
    fixed_a = _normalise(lm.numpy().astype(np.float32), foot)
    # outside the block a neutral grey, not 0: no artificial edge for the metric to lock onto
    moving_a = _normalise(np.where(np.isfinite(moving), moving, np.median(moving[foot])).astype(np.float32), foot)
    f_img, m_img = _sitk(lm, fixed_a), _sitk(lm, moving_a)
    mask_img = sitk.Cast(_sitk(lm, foot.astype(np.float32)), sitk.sitkUInt8)

    # 2. the correction C: crop point -> point of the warped EM (a pull-back, as ITK estimates it)
    if threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    centre = lm.index_to_physical(np.argwhere(foot).mean(0)[None])[0]
    tx = sitk.Euler3DTransform() if model == "rigid" else sitk.AffineTransform(3)
    tx.SetCenter(centre.tolist())

    def method():
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(int(bins))
        reg.SetMetricFixedMask(mask_img)
        reg.SetMetricSamplingStrategy(reg.NONE)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetShrinkFactorsPerLevel([int(s) for s in shrink])
        reg.SetSmoothingSigmasPerLevel([float(s) for s in smooth])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        return reg

    reg = method()
    # with scales from physical shift a unit step moves voxels by about one length unit: start at 2 crop voxels
    vmin = float(np.min(lm.voxel_size))
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0 * vmin, minStep=1e-4 * vmin,
                                                 numberOfIterations=int(iterations), relaxationFactor=RELAXATION,
                                                 gradientMagnitudeTolerance=1e-10)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(tx, inPlace=True)
    probe = method()
    probe.SetShrinkFactorsPerLevel([1])
    probe.SetSmoothingSigmasPerLevel([0.0])
    probe.SetInitialTransform(sitk.AffineTransform(3))
    metric_before = float(probe.MetricEvaluate(f_img, m_img))
    try:
        reg.Execute(f_img, m_img)
    except RuntimeError as exc:
        raise AtlasregError(f"SimpleITK refinement failed: {str(exc).strip().splitlines()[-1]}") from None
    info = {"affine_iterations": int(reg.GetOptimizerIteration()),
            "stop": reg.GetOptimizerStopConditionDescription()}
    C = linear_matrix(tx)
    lm_sp = grid.space
    fit_sp = Space(lm_sp.name + "__landmarks", lm_sp.unit)
    relabel = Affine(np.eye(4), lm_sp, fit_sp)
    Cinv = Affine(np.linalg.inv(C), fit_sp, lm_sp)  # warped-EM frame -> crop frame
    final_probe = method()
    final_probe.SetShrinkFactorsPerLevel([1])
    final_probe.SetSmoothingSigmasPerLevel([0.0])
    if model == "bspline":
        bs = sitk.BSplineTransformInitializer(f_img, [int(bspline_nodes)] * 3, 3)
        breg = method()
        # B-spline MI derivatives cost ~100x the affine's per sample: a random quarter of the mask is enough
        breg.SetMetricSamplingStrategy(breg.RANDOM)
        breg.SetMetricSamplingPercentage(0.25, int(seed))
        breg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=int(bspline_iterations),
                                  maximumNumberOfCorrections=5,
                                  maximumNumberOfFunctionEvaluations=2 * int(bspline_iterations))
        aff = affine_to_sitk(C)
        breg.SetMovingInitialTransform(aff)
        breg.SetInitialTransform(bs, inPlace=True)
        try:
            breg.Execute(f_img, m_img)
        except RuntimeError as exc:
            raise AtlasregError(f"SimpleITK B-spline refinement failed: {str(exc).strip().splitlines()[-1]}") from None
        # pull: x -> C(x + u(x)); u sampled on the crop grid, its inverse solved numerically
        mid = Space(lm_sp.name + "__bspline", lm_sp.unit)
        U = sampled_field(bs, f_img, lm_sp, mid)
        Cinv_mid = Affine(np.linalg.inv(C), fit_sp, mid)
        # nodes without an inverse (preimage off the crop grid) get zero displacement, so that the refined
        # transform can be saved; counted in info
        Uinv = U.inverse().to_field(fill="zero")
        info["inverse_zero_filled_nodes"] = Uinv.filled_nodes
        back = Sequence([Cinv_mid, Uinv])                              # warped-EM frame -> crop frame
        # re-label the numerical inverse's end space back to the crop's space
        back = Sequence([back, Affine(np.eye(4), back.dst, lm_sp)]) if back.dst.name != lm_sp.name else back
        refined = Sequence([T, relabel, back])
        full = sitk.CompositeTransform([aff, bs])
        final_probe.SetInitialTransform(full)
        info["bspline_iterations"] = int(breg.GetOptimizerIteration())
    else:
        refined = T.compose(relabel).compose(Cinv) if isinstance(T, Affine) else Sequence([T, relabel, Cinv])
        final_probe.SetInitialTransform(affine_to_sitk(C))
    metric_after = float(final_probe.MetricEvaluate(f_img, m_img))

    # 3. held-out landmarks decide
    before = np.linalg.norm(T.map_points(hs) - hd, axis=1)
    after = np.linalg.norm(refined.map_points(hs) - hd, axis=1)
    accepted = bool(np.all(np.isfinite(after)) and np.median(after) <= np.median(before) * (1 + tolerance))
    msg = (f"held-out landmark median error {np.median(before):.4g} -> {np.median(after):.4g} {T.dst.unit} "
           f"over {len(hs)} pairs")
    if not accepted:
        msg = ("intensity refinement made the " + msg + ": keeping the landmark fit")
        warnings.warn(msg, stacklevel=2)
    else:
        msg = "intensity refinement kept: " + msg
    return RefineResult(refined if accepted else landmark_fit, accepted, refined, landmark_fit, before, after,
                        metric_before, metric_after, model, T.dst.unit, time.perf_counter() - t0, msg, info)
