"""Mapping 1M points through affine + displacement field: atlasreg vs ``ants.apply_transforms_to_points``.

Both tools read the SAME transform files, written the way ``ants.registration``
writes them: a ``0GenericAffine.mat`` and a ``1Warp.nii.gz`` on the grid of the
real light-sheet brain (270x193x271 voxels of 50x40x40 µm). The warp is a real
ANTs SyN result: a short SyN run on the 4x-downsampled brain against an
affine-moved copy of itself, its field resampled (trilinear) onto the full
grid. The affine is ANTs' own.

Points: 1M, uniform over the field's grid, in random order (the worst case for
cache use; cell tables and tracings usually come in a more local order).

Timing (best of ``--repeats``, same process, same points; wall clock and, as a
check on a shared machine, process CPU time over all threads):

* ANTs end to end: one ``apply_transforms_to_points`` call (it reads the files each call);
  ANTs per point: the same minus a 1-point call (file reading and set-up), i.e. its marginal rate;
* atlasreg end to end: ``load_transform`` + ``map_points``;
  atlasreg mapping: ``map_points`` on the already loaded transform.

Warm-up: before any timing, atlasreg's numba kernels are compiled (or loaded from
numba's cache) and run once on 1,000 and on 200,000 points (both kernel paths),
and ANTs is called once.
Run: ``python benchmarks/bench_points.py`` (writes benchmarks/results/points.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("ATLASREG_DATA", HERE.parent.parent / "shared" / "data"))


def make_transform_files(out: Path) -> tuple[list[str], tuple[int, int, int], np.ndarray]:
    """Run a short real SyN registration and write ANTs-style files on the full-resolution grid."""
    import ants
    import SimpleITK as sitk
    import tifffile
    from scipy import ndimage as ndi

    import atlasreg as ar

    full = tifffile.imread(DATA / "lightsheet" / "brain_psl_50x40x40um.tif").astype(np.float32)
    vs_full = np.array([50.0, 40.0, 40.0])
    small = ndi.zoom(full, 0.25, order=1)
    vs = vs_full * np.array(full.shape) / np.array(small.shape)
    fixed = ar.Volume(small, voxel_size=vs, space="fixed")
    c = fixed.index_to_physical([np.array(small.shape) / 2.0])[0]
    A = ar.Affine(ar.Affine.from_translation([150, -100, 80]).matrix
                  @ ar.Affine.from_rotation([5, -3, 4], center=c).matrix, "fixed", "moving")
    moving = ar.warp(fixed, A, ar.Grid(fixed.shape, tuple(vs), ar.Space("moving")))
    reg = ants.registration(fixed.to_ants(), moving.to_ants(), type_of_transform="SyN",
                            reg_iterations=(40, 20, 0), outprefix=str(out / "small_"))
    warp_small, affine = reg["fwdtransforms"]
    # The SyN field, resampled onto the full 270x193x271 grid (ANTs writes fields on the fixed grid).
    f = sitk.ReadImage(warp_small)
    ref = sitk.Image([int(s) for s in full.shape], sitk.sitkVectorFloat32, 3)
    ref.SetSpacing(tuple(vs_full))
    big = sitk.Resample(f, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat32)
    warp = out / "bench_1Warp.nii.gz"
    sitk.WriteImage(big, str(warp), useCompression=True)
    lo, hi = np.zeros(3), (np.array(full.shape) - 1) * vs_full
    return [str(warp), affine], full.shape, np.stack([lo, hi])


def best_of(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall-clock time and best process CPU time (all threads) of ``repeats`` calls."""
    best, best_cpu, out = np.inf, np.inf, None
    for _ in range(repeats):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return best, best_cpu, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "points.json")
    args = ap.parse_args(argv)

    import ants
    import numba
    import pandas as pd

    import atlasreg as ar
    from atlasreg.transforms.files import load_transform

    with tempfile.TemporaryDirectory() as tmp:
        files, shape, box = make_transform_files(Path(tmp))
        rng = np.random.default_rng(0)
        pts = rng.uniform(box[0], box[1], (args.points, 3))
        df = pd.DataFrame(pts, columns=list("xyz"))
        fixed, moving = ar.Space("fixed"), ar.Space("moving")

        # --- atlasreg: warm-up (numba compile or cache load, both kernel paths) before any timing ---
        T = load_transform(files, src=fixed, dst=moving)
        T.map_points(pts[:1000])
        T.map_points(pts[:200_000])

        t_load, c_load, T = best_of(lambda: load_transform(files, src=fixed, dst=moving), args.repeats)
        t_map, c_map, ours = best_of(lambda: T.map_points(pts), args.repeats)

        # --- ANTs: same files, same points ---
        one = df.iloc[:1]
        ants.apply_transforms_to_points(3, one, files)  # warm-up (library load)
        t_ants_1, c_ants_1, _ = best_of(lambda: ants.apply_transforms_to_points(3, one, files), args.repeats)
        t_ants, c_ants, theirs_df = best_of(lambda: ants.apply_transforms_to_points(3, df, files), args.repeats)
        theirs = theirs_df[list("xyz")].to_numpy(float)

    n = args.points
    ants_marginal = max(t_ants - t_ants_1, 1e-9)
    ants_marginal_cpu = max(c_ants - c_ants_1, 1e-9)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    res = {
        "task": "map points through affine + displacement field (ANTs SyN output files)",
        "points": n,
        "field_grid": list(map(int, shape)),
        "field_voxel_um": [50.0, 40.0, 40.0],
        "threads": {"numba": numba.get_num_threads(),
                    "itk": int(os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"])},
        "cpu_count": os.cpu_count(),
        "warmup": "numba kernels compiled/loaded and run on 1,000 and 200,000 points before timing; "
              "ANTs called once first",
        "load_average_1min": load,
        "atlasreg": {"load_s": t_load, "map_s": t_map, "map_cpu_s": c_map, "points_per_s_map": n / t_map,
                     "points_per_cpu_s_map": n / c_map, "points_per_s_end_to_end": n / (t_load + t_map)},
        "ants": {"end_to_end_s": t_ants, "one_point_call_s": t_ants_1, "end_to_end_cpu_s": c_ants,
                 "one_point_call_cpu_s": c_ants_1, "points_per_s_end_to_end": n / t_ants,
                 "points_per_s_marginal": n / ants_marginal, "points_per_cpu_s_marginal": n / ants_marginal_cpu},
        "ratio_per_point": ants_marginal / t_map,
        "ratio_per_point_cpu": ants_marginal_cpu / c_map,
        "ratio_end_to_end": t_ants / (t_load + t_map),
        "max_abs_difference_um": float(np.nanmax(np.abs(ours - theirs))),
        "versions": {"python": platform.python_version(), "antspyx": ants.__version__, "numba": numba.__version__,
                     "atlasreg": ar.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print("| points | atlasreg map (pts/s) | ANTs per point (pts/s) | ratio (wall) | ratio (CPU time) | "
          "atlasreg load+map (s) | ANTs call (s) | ratio end to end | max diff (µm) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {n:,} | {n / t_map:,.0f} | {n / ants_marginal:,.0f} | {res['ratio_per_point']:.1f}x | "
          f"{res['ratio_per_point_cpu']:.1f}x | {t_load + t_map:.2f} | {t_ants:.2f} | "
          f"{res['ratio_end_to_end']:.1f}x | {res['max_abs_difference_um']:.1e} |")
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
