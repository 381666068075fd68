"""Cubic B-spline transforms: atlasreg vs SimpleITK, side by side in one process, one thread each.

* points: ``BSplineTransform.map_points`` on N random points vs SimpleITK's ``TransformPoint`` (its only
  point API, one call per point; timed on a subsample and extrapolated linearly, reported as such);
* warp: ``atlasreg.warp`` (linear) of a float32 volume through the B-spline vs ``SimpleITK.Resample`` with
  the same transform and grid (outputs compared voxel by voxel).

The transform is a SimpleITK ``BSplineTransform`` on an oblique grid with random coefficients, read by atlasreg
from the file SimpleITK wrote. CPU seconds (``time.process_time``), best of ``--repeats``; numba kernels are
compiled before timing. The machine is shared: its load average is recorded with the result.
Run: ``python benchmarks/bench_bspline.py`` (writes benchmarks/results/bspline.json).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from atlasreg import Grid, Space, Volume, load_transform, warp  # noqa: E402

HERE = Path(__file__).resolve().parent


def best_cpu(fn, repeats: int):
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--sitk-points", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=96, help="warp grid: size^3 voxels")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "bspline.json"))
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    n = a.size
    img = sitk.Image([n, n, n], sitk.sitkFloat32)
    img.SetSpacing((2.0, 2.0, 2.0))
    img.SetDirection(sitk.VersorTransform((0.3, 0.2, 0.9), 0.2).GetMatrix())
    tx = sitk.BSplineTransformInitializer(img, [8, 8, 8], 3)
    tx.SetParameters(tuple(rng.normal(0, 3.0, len(tx.GetParameters()))))
    with tempfile.TemporaryDirectory() as d:
        sitk.WriteTransform(tx, str(Path(d) / "b.h5"))
        T = load_transform(Path(d) / "b.h5", src=Space("fixed"), dst=Space("moving"))
    lo = np.array(img.TransformIndexToPhysicalPoint((0, 0, 0)))
    pts = lo + rng.uniform(-10, 2 * n + 10, (a.points, 3)) @ np.asarray(img.GetDirection()).reshape(3, 3).T
    T.map_points(pts[:10])  # compile
    t_ours, ours = best_cpu(lambda: T.map_points(pts), a.repeats)
    sub = pts[: a.sitk_points]
    t_sub, theirs = best_cpu(lambda: np.array([tx.TransformPoint(tuple(p)) for p in sub]), 1)
    t_sitk = t_sub * a.points / len(sub)
    err_pts = float(np.abs(ours[: len(sub)] - theirs).max())

    mov = rng.random((n, n, n)).astype(np.float32)
    vol = Volume(mov, voxel_size=(2, 2, 2), direction=np.asarray(img.GetDirection()).reshape(3, 3), space="moving")
    grid = Grid((n, n, n), (2, 2, 2), Space("fixed"), direction=np.asarray(img.GetDirection()).reshape(3, 3))
    warp(vol, T, grid)  # compile
    t_warp, w = best_cpu(lambda: warp(vol, T, grid), a.repeats)
    mimg = sitk.GetImageFromArray(mov.transpose(2, 1, 0))
    mimg.CopyInformation(img)
    t_res, r = best_cpu(lambda: sitk.Resample(mimg, img, tx, sitk.sitkLinear, 0.0), a.repeats)
    err_warp = float(np.abs(w.data - sitk.GetArrayFromImage(r).transpose(2, 1, 0)).max())
    res = {
        "points": a.points, "atlasreg_map_points_cpu_s": round(t_ours, 4),
        "sitk_TransformPoint_cpu_s_extrapolated": round(t_sitk, 3), "sitk_points_timed": len(sub),
        "points_ratio_sitk_over_atlasreg": round(t_sitk / t_ours, 1), "points_max_abs_diff": err_pts,
        "warp_voxels": n ** 3, "atlasreg_warp_cpu_s": round(t_warp, 4), "sitk_Resample_cpu_s": round(t_res, 4),
        "warp_ratio_sitk_over_atlasreg": round(t_res / t_warp, 2), "warp_max_abs_diff": err_warp,
        "threads": 1, "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
