"""EM → light-sheet: how much masked intensity refinement recovers of an imperfect landmark fit; pyramid memory.

Run: ``python benchmarks/bench_em_refine.py [--trials 5] [--no-bspline] [--no-pyramid] [--data /work/shared/data]``
Writes ``benchmarks/results/em_refine.json`` and ``em_refine.md``.

No public data set has EM and light-sheet images of the same tissue, so the light-sheet side is built from the real
ISBI 2012 ssTEM stack (30 × 512 × 512 voxels of 4 × 4 × 50 nm) with :func:`atlasreg.em.synthetic_lm_pair`:
anisotropic Gaussian PSF (σ 24 nm lateral, 75 nm axial), a KNOWN affine (rotation 1°/0.5°/3°, scale 1.03, shift
30/−40/25 nm), resampling onto 75 × 24 × 24 nm voxels in a µm space, contrast inversion, gamma 0.7 and noise
(σ 5 % of the range). The stack is only 2 × 2 × 1.5 µm, so the "light-sheet" is scaled with it: its voxels are 6×
the EM's in-plane and 1.5× axially, with a light-sheet-like PSF shape, not light-sheet's absolute size.

Per trial (a different random draw of landmarks):

* the EM block (the central 20 × 448 × 448 voxels) is pyramided (:func:`build_pyramid`) and the last level finer
  than the light-sheet voxels is used;
* an imperfect landmark fit: affine from 6 pairs whose light-sheet ends carry N(0, 30 nm) noise and a bias of
  (0, 20, −15) nm (a picking session's offset); 12 other pairs with the same noise, unbiased, are held out;
* atlasreg: crop the light-sheet region (:func:`crop_lm`), refine (:func:`refine_landmark_fit`, masked Mattes MI,
  affine, starting from the fit, EM blurred by the light-sheet PSF); the held-out check decides;
* peers: SimpleITK's usual multimodal affine registration (Mattes MI, no mask, no PSF matching) of the same EM
  level onto the same crop, (a) initialised by the landmark fit, (b) by geometric centring — "intensity alone";
* error vs the known transform over a 6 × 6 × 6 lattice spanning the block (nm; median, p95, per axis), and the
  held-out landmark error before and after.

Trial 0 also runs the B-spline refinement (slow in SimpleITK). The pyramid part writes ~400 MB of EM-like data
lazily to Zarr and records the peak RSS of a child process building its pyramid, against the volume size.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
    os.environ.setdefault(_v, "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import atlasreg as ar  # noqa: E402
from atlasreg.em import build_pyramid, crop_lm, refine_landmark_fit, synthetic_lm_pair  # noqa: E402
from atlasreg.transforms.sitk_bridge import linear_matrix  # noqa: E402

EM = ar.Space("em", "nm")
LM = ar.Space("lm", "um")
LM_VOXEL_NM = (75.0, 24.0, 24.0)
PSF_UM = (0.075, 0.024, 0.024)


def _stats_nm(err_um: np.ndarray) -> dict:
    n = np.linalg.norm(err_um, axis=1) * 1000
    return {"median_nm": round(float(np.median(n)), 2), "p95_nm": round(float(np.percentile(n, 95)), 2),
            "max_nm": round(float(n.max()), 2),
            "median_abs_per_axis_nm": [round(float(v), 2) for v in np.median(np.abs(err_um), 0) * 1000]}


def _peer_sitk(level: ar.Volume, crop: ar.Volume, fit: ar.Affine | None = None) -> ar.Transform:
    """SimpleITK's standard multimodal affine: Mattes MI, no mask, no PSF matching; initialised by geometric
    centring (``fit=None``: intensity alone) or by the landmark fit."""
    import SimpleITK as sitk

    f = sitk.Cast(crop.to_sitk(), sitk.sitkFloat32)
    m = sitk.Cast(level.in_unit("um").to_sitk(), sitk.sitkFloat32)
    if fit is None:
        init = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(3),
                                                 sitk.CenteredTransformInitializerFilter.GEOMETRY)
    else:
        pull = np.linalg.inv(fit.matrix @ np.diag([1e3, 1e3, 1e3, 1.0]))  # light-sheet um -> EM um
        init = sitk.AffineTransform(3)
        init.SetMatrix(pull[:3, :3].ravel().tolist())
        init.SetTranslation(pull[:3, 3].tolist())
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    vmin = float(np.min(crop.voxel_size))
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2 * vmin, minStep=1e-4 * vmin, numberOfIterations=200,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-10)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(init, inPlace=True)
    reg.Execute(f, m)
    P = linear_matrix(init)
    # P: light-sheet um -> EM um (the pull-back); EM nm -> light-sheet um is its inverse after nm -> um
    return ar.Affine(np.linalg.inv(P) @ np.diag([1e-3, 1e-3, 1e-3, 1.0]), EM, LM)


def refinement(data: Path, trials: int, bspline: bool) -> dict:
    import tifffile

    a = tifffile.imread(data / "em" / "isbi2012_train_volume_30x512x512.tif")
    em = ar.Volume(a, (50, 4, 4), space=EM)
    t0 = time.perf_counter()
    pair = synthetic_lm_pair(em, lm_voxel_size=LM_VOXEL_NM, psf_sigma=LM_VOXEL_NM)
    t_pair = time.perf_counter() - t0
    G = pair.truth
    block = ar.Volume(a[5:25, 32:480, 32:480], (50, 4, 4), origin=em.index_to_physical([[5, 32, 32]])[0], space=EM)
    tmp = Path(tempfile.mkdtemp(prefix="bench-em-"))
    t0 = time.perf_counter()
    pyr = build_pyramid(block, tmp / "block.ome.zarr", target_voxel_size=LM_VOXEL_NM)
    t_pyr = time.perf_counter() - t0
    k = max(pyr.level_for(LM_VOXEL_NM) - 1, 0)
    level = pyr.level(k)
    lattice = block.index_to_physical(np.stack(np.meshgrid(*[np.linspace(0, s - 1, 6) for s in block.shape],
                                                           indexing="ij"), -1).reshape(-1, 3))
    truth = G.map_points(lattice)
    rows = []
    for trial in range(trials):
        rng = np.random.default_rng(trial)

        def picks(n):
            return block.index_to_physical(rng.uniform(0, np.array(block.shape) - 1, (n, 3)))

        fs, hs = picks(6), picks(12)
        fd = G.map_points(fs) + rng.normal(0, 0.03, (6, 3)) + [0.0, 0.02, -0.015]
        hd = G.map_points(hs) + rng.normal(0, 0.03, (12, 3))
        fit = ar.fit_landmarks(fs, fd, model="affine", src=EM, dst=LM)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            crop = crop_lm(block, pair.lm, fit, margin=0.05)
        row = {"trial": trial, "crop_shape": list(crop.shape), "landmark_fit": _stats_nm(fit.map_points(lattice) - truth),
               "heldout_fit_median_nm": round(float(np.median(np.linalg.norm(fit.map_points(hs) - hd, axis=1))) * 1000,
                                              2)}
        models = ["affine"] + (["bspline"] if bspline and trial == 0 else [])
        for model in models:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = refine_landmark_fit(level, crop, fit, hs, hd, model=model, psf_sigma=PSF_UM)
            row[f"atlasreg_{model}"] = {
                "seconds": round(time.perf_counter() - t0, 2), "accepted": res.accepted,
                "refined": _stats_nm(res.refined.map_points(lattice) - truth),
                "kept": _stats_nm(res.transform.map_points(lattice) - truth),
                "heldout_median_nm_before": round(float(np.median(res.heldout_before)) * 1000, 2),
                "heldout_median_nm_after": round(float(np.median(res.heldout_after)) * 1000, 2),
                "mi_before": round(res.metric_before, 4), "mi_after": round(res.metric_after, 4)}
        for key, init in (("sitk_intensity_only", None), ("sitk_from_landmarks", fit)):
            t0 = time.perf_counter()
            try:
                P = _peer_sitk(level, crop, init)
                row[key] = {"seconds": round(time.perf_counter() - t0, 2),
                            "error": _stats_nm(P.map_points(lattice) - truth)}
            except RuntimeError as exc:  # the peer may fail outright
                row[key] = {"seconds": round(time.perf_counter() - t0, 2), "failed": str(exc).strip()[-200:]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    med = lambda key, sub: float(np.median([r[key][sub]["median_nm"] for r in rows if sub in r.get(key, {})]))  # noqa: E731
    fit_med = float(np.median([r["landmark_fit"]["median_nm"] for r in rows]))
    ref_med = med("atlasreg_affine", "refined")
    kept_med = med("atlasreg_affine", "kept")
    peer = [r["sitk_intensity_only"]["error"]["median_nm"] for r in rows if "error" in r["sitk_intensity_only"]]
    peer2 = [r["sitk_from_landmarks"]["error"]["median_nm"] for r in rows if "error" in r["sitk_from_landmarks"]]
    summary = {
        "trials": trials, "lm_voxel_nm": list(LM_VOXEL_NM), "em_level_voxel_nm": [float(v) for v in level.voxel_size],
        "synthetic_pair_seconds": round(t_pair, 2), "pyramid_seconds": round(t_pyr, 2),
        "landmark_fit_median_nm": round(fit_med, 2), "refined_affine_median_nm": round(ref_med, 2),
        "kept_median_nm": round(kept_med, 2),
        "recovered_fraction_of_fit_error": round(1 - kept_med / fit_med, 3),
        "accepted": int(sum(r["atlasreg_affine"]["accepted"] for r in rows)),
        "inplane_fit_median_nm": round(float(np.median([np.median(r["landmark_fit"]["median_abs_per_axis_nm"][1:])
                                                         for r in rows])), 2),
        "inplane_refined_median_nm": round(float(np.median([np.median(
            r["atlasreg_affine"]["refined"]["median_abs_per_axis_nm"][1:]) for r in rows])), 2),
        "axial_fit_median_nm": round(float(np.median([r["landmark_fit"]["median_abs_per_axis_nm"][0] for r in rows])), 2),
        "axial_refined_median_nm": round(float(np.median([r["atlasreg_affine"]["refined"]["median_abs_per_axis_nm"][0]
                                                           for r in rows])), 2),
        "sitk_intensity_only_median_nm": round(float(np.median(peer)), 2) if peer else None,
        "sitk_intensity_only_failed": trials - len(peer),
        "sitk_from_landmarks_median_nm": round(float(np.median(peer2)), 2) if peer2 else None,
        "sitk_from_landmarks_failed": trials - len(peer2),
        "ratio_sitk_from_landmarks_to_atlasreg": round(float(np.median(peer2)) / kept_med, 2) if peer2 else None,
        "ratio_sitk_intensity_only_to_atlasreg": round(float(np.median(peer)) / kept_med, 2) if peer else None,
        "affine_seconds_median": round(float(np.median([r["atlasreg_affine"]["seconds"] for r in rows])), 2),
        "sitk_seconds_median": round(float(np.median([r["sitk_intensity_only"]["seconds"] for r in rows])), 2),
    }
    return {"summary": summary, "trials": rows}


_WORKER = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, dask.array as da
    import atlasreg as ar
    from atlasreg.em import build_pyramid
    src, out, warm = sys.argv[1], sys.argv[2], sys.argv[3]
    build_pyramid(ar.Volume(da.zeros((8, 64, 64), np.uint8, chunks=32), (40, 4, 4), space=ar.Space("em", "nm")),
                  warm, target_voxel_size=16)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    p = build_pyramid(src, out, voxel_size=(40, 4, 4), unit="nm", space="em", target_voxel_size=500)
    print(json.dumps({"baseline": base, "seconds": time.perf_counter() - t, "levels": [lv.shape for lv in p.levels]}))
""")
_LAUNCHER = textwrap.dedent("""
    import json, resource, subprocess, sys
    r = subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    doc["peak"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps(doc))
""")


def pyramid_memory(shape=(96, 2048, 2048)) -> dict:
    import dask.array as da
    import zarr

    chunks = (16, 256, 256)

    def block(block_info=None):
        (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        z, y, x = np.ogrid[z0:z1, y0:y1, x0:x1]
        rng = np.random.default_rng(z0 * 1_000_003 + y0 * 1009 + x0)
        v = 128 + 60 * np.sin(x * 0.05 + y * 0.031) * np.cos(z * 0.2 + y * 0.017)
        return np.clip(v + rng.integers(-20, 21, v.shape), 0, 255).astype(np.uint8)

    tmp = Path(tempfile.mkdtemp(prefix="bench-em-pyr-"))
    src = tmp / "big.zarr"
    arr = zarr.open_array(str(src), mode="w", shape=shape, chunks=chunks, dtype=np.uint8, zarr_format=2)
    da.store(da.map_blocks(block, chunks=da.core.normalize_chunks(chunks, shape), dtype=np.uint8), arr, lock=False)
    r = subprocess.run([sys.executable, "-c", _LAUNCHER, _WORKER, str(src), str(tmp / "out.ome.zarr"),
                        str(tmp / "warm.ome.zarr")], capture_output=True, text=True, check=True)
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    nbytes = int(np.prod(shape))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return {"volume_mib": round(nbytes / 2**20, 1), "baseline_mib": round(doc["baseline"] / 2**20, 1),
            "peak_mib": round(doc["peak"] / 2**20, 1),
            "extra_over_baseline_fraction_of_volume": round((doc["peak"] - doc["baseline"]) / nbytes, 3),
            "seconds": round(doc["seconds"], 1), "levels": doc["levels"]}


def _markdown(res: dict) -> str:
    s = res["refinement"]["summary"]
    lines = ["# EM → light-sheet refinement (synthetic pair from the real ISBI 2012 EM stack)", "",
             f"{s['trials']} trials; light-sheet voxels {s['lm_voxel_nm']} nm; EM level {s['em_level_voxel_nm']} nm.",
             "Errors vs the known transform over a lattice spanning the EM block (median over trials of the median).",
             "", "| map | median error (nm) | in-plane (nm) | axial (nm) |", "|---|---|---|---|",
             f"| landmark fit (6 noisy, biased pairs) | {s['landmark_fit_median_nm']} | {s['inplane_fit_median_nm']} | "
             f"{s['axial_fit_median_nm']} |",
             f"| atlasreg refined (affine, masked MI) | {s['refined_affine_median_nm']} | "
             f"{s['inplane_refined_median_nm']} | {s['axial_refined_median_nm']} |",
             f"| atlasreg kept (after held-out check) | {s['kept_median_nm']} | | |",
             f"| peer: SimpleITK affine MI from the landmark fit, unmasked ({s['sitk_from_landmarks_failed']} failed) | "
             f"{s['sitk_from_landmarks_median_nm']} | | |",
             f"| peer: SimpleITK affine MI, intensity only ({s['sitk_intensity_only_failed']} failed) | "
             f"{s['sitk_intensity_only_median_nm']} | | |", "",
             f"Refinement accepted in {s['accepted']}/{s['trials']} trials; recovered "
             f"{100 * s['recovered_fraction_of_fit_error']:.0f} % of the landmark fit's error. Error ratio peer / "
             f"atlasreg: {s['ratio_sitk_from_landmarks_to_atlasreg']} (from landmarks), "
             f"{s['ratio_sitk_intensity_only_to_atlasreg']} (intensity only). Time: refinement "
             f"{s['affine_seconds_median']} s, intensity-only peer {s['sitk_seconds_median']} s (median)."]
    b = res["refinement"]["trials"][0].get("atlasreg_bspline")
    if b:
        lines += ["", f"B-spline refinement (trial 0): median {b['refined']['median_nm']} nm (per axis "
                      f"{b['refined']['median_abs_per_axis_nm']}), {b['seconds']} s, accepted {b['accepted']}."]
    p = res.get("pyramid_memory")
    if p:
        lines += ["", "## Pyramid memory", "",
                  f"{p['volume_mib']} MiB uint8 volume (Zarr) → {len(p['levels'])} levels in {p['seconds']} s; peak RSS "
                  f"{p['peak_mib']} MiB over a warmed-up baseline of {p['baseline_mib']} MiB: the extra is "
                  f"{100 * p['extra_over_baseline_fraction_of_volume']:.0f} % of the volume."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("ATLASREG_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--no-bspline", action="store_true")
    ap.add_argument("--no-pyramid", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "em_refine.json"))
    args = ap.parse_args()
    res = {"refinement": refinement(Path(args.data), args.trials, not args.no_bspline)}
    if not args.no_pyramid:
        res["pyramid_memory"] = pyramid_memory()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float))
    out.with_suffix(".md").write_text(_markdown(res))
    print(_markdown(res))


if __name__ == "__main__":
    main()
