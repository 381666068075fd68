"""The SimpleITK backend: multi-resolution affine (Mattes MI) → B-spline (correlation), behind the same call.

Like the ANTs backend it saves each stage's transform in the work folder as it completes (a rerun with
the same folder resumes) and returns the MOVING → FIXED map with the FIXED → MOVING map attached. The
B-spline is sampled into a displacement field on the fixed working grid; its inverse is solved
numerically on the same grid, nodes without an inverse (preimage off the grid) set to zero displacement
and counted in ``info["inverse_field"]``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import AtlasregError
from ..spaces import Space
from ..transforms.base import Affine, Sequence, Transform
from ..transforms.sitk_bridge import affine_to_sitk, linear_matrix, sampled_field
from ..volume import Volume


def _sitk_image(vol: Volume):
    import SimpleITK as sitk

    return sitk.Cast(vol.to_sitk(), sitk.sitkFloat32)


def _method(params: dict, stage: str, seed: int):
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    its = params[f"{stage}_iterations"]
    reg.SetShrinkFactorsPerLevel([int(s) for s in params[f"{stage}_shrink"]])
    reg.SetSmoothingSigmasPerLevel([float(s) for s in params[f"{stage}_smooth"]])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInterpolator(sitk.sitkLinear)
    if stage == "affine":
        reg.SetMetricAsMattesMutualInformation(int(params["affine_bins"]))
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(float(params["affine_sampling"]), seed)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4,
                                                     numberOfIterations=int(max(its)),
                                                     relaxationFactor=0.6)
        reg.SetOptimizerScalesFromPhysicalShift()
    else:
        reg.SetMetricAsCorrelation()
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(float(params["bspline_sampling"]), seed)
        reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-6, numberOfIterations=int(max(its)),
                                 maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=4 * int(max(its)))
    return reg


def register_sitk(fixed: Volume, moving: Volume, init: Affine, params: dict, workdir: str | os.PathLike,
                  on_stage: Callable[[str, str], None] | None = None) -> tuple[Transform, dict]:
    """Register working-resolution ``moving`` onto ``fixed``; returns (MOVING → FIXED transform, info).

    ``init`` maps FIXED points to MOVING points.
    """
    import SimpleITK as sitk

    from ..transforms.files import load_transform, save_transform

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    note = on_stage or (lambda s, st: None)
    f_img, m_img = _sitk_image(fixed), _sitk_image(moving)
    seed = int(params["random_seed"])
    if params.get("threads"):
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(params["threads"]))
    info: dict = {"stages": {}}
    A = init
    if params["affine_iterations"]:
        path = work / "sitk_affine.json"
        if path.exists():
            note("affine", "skip")
            A = load_transform(path, fixed.space, moving.space)
        else:
            note("affine", "start")
            t0 = time.perf_counter()
            tx = affine_to_sitk(init.matrix)
            reg = _method(params, "affine", seed)
            reg.SetInitialTransform(tx, inPlace=True)
            try:
                reg.Execute(f_img, m_img)
            except RuntimeError as exc:
                raise AtlasregError(f"SimpleITK affine registration failed: {exc}") from None
            A = Affine(linear_matrix(tx), fixed.space, moving.space)
            save_transform(A, path, force=True)
            info["stages"]["affine"] = {"seconds": time.perf_counter() - t0}
            note("affine", "done")
    if not params["bspline_iterations"]:
        return A.inverse().with_inverse(A), info

    mid = Space(f"{fixed.space.name}__bspline", fixed.unit)
    fpath = work / "sitk_bspline_field.json"
    if fpath.exists():
        note("bspline", "skip")
        U = load_transform(fpath, fixed.space, mid)
    else:
        note("bspline", "start")
        t0 = time.perf_counter()
        extent = np.asarray(fixed.shape) * fixed.voxel_size
        mesh = [max(1, int(round(e / float(params["bspline_mesh_spacing"])))) for e in extent]
        bs = sitk.BSplineTransformInitializer(f_img, mesh, 3)
        reg = _method(params, "bspline", seed)
        reg.SetMovingInitialTransform(affine_to_sitk(A.matrix))
        reg.SetInitialTransform(bs, inPlace=True)
        try:
            reg.Execute(f_img, m_img)
        except RuntimeError as exc:
            raise AtlasregError(f"SimpleITK B-spline registration failed: {exc}") from None
        # y = A(B(x)): sample B as a displacement on the fixed working grid
        U = sampled_field(bs, f_img, fixed.space, mid)
        save_transform(U, fpath, force=True)
        info["stages"]["bspline"] = {"seconds": time.perf_counter() - t0}
        note("bspline", "done")
    A_mid = Affine(A.matrix, mid, moving.space)
    forward = Sequence([U, A_mid])                        # fixed -> moving
    # numerical inverse, sampled on the same grid. Nodes near the grid's faces whose preimage lies off the grid
    # have no inverse: they get zero displacement (ITK's rule off a field's grid, as before), chosen here so
    # that the transform in memory and the one saved (ITK .h5 cannot hold NaN) map points alike; counted in info.
    inv = U.inverse()
    Uinv = inv.to_field(fill="zero")
    info["inverse_field"] = {"nodes": int(np.prod(Uinv.shape)), "zero_filled_nodes": Uinv.filled_nodes,
                             "off_grid_nodes": inv.last_report.outside, "failed_nodes": inv.last_report.failed}
    backward = Sequence([A_mid.inverse(), Uinv])          # moving -> fixed
    return backward.with_inverse(forward), info
