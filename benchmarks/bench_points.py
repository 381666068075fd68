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
* atlasreg end to end: ``load_transform`` + ``map_points`` (timed together, as a user calling it once);
  atlasreg load alone, and mapping alone: ``map_points`` on the already loaded transform.

The headline is end to end on the same files; the marginal rate (a loaded
transform mapping many point sets) stands beside it. Both tools spend most of
an end-to-end call inflating the 148 MB ``.nii.gz`` warp (one gzip stream,
which cannot be inflated in parallel): the run also times that inflation alone,
with zlib (what ITK, hence ANTs, uses) and with ISA-L (what atlasreg uses), to
show the floor.

Warm-up: before any timing, atlasreg's numba kernels are compiled (or loaded from
numba's cache) and run once on 1,000 and on 200,000 points (both kernel paths),
and ANTs is called once.
Run: ``python benchmarks/bench_points.py`` (writes benchmarks/results/points.json and points.md).

``--registration REG`` instead measures ``atlasreg points REG cells.csv`` on 1M cells of a real
registration to the 25 µm atlas (made first with ``atlasreg register brain_psl_50x40x40um.tif
--voxel-size 50 40 40 --orientation psl --atlas allen_mouse_25um -o REG``), end to end as a user runs it
(a new process: start-up, CSV in, map, CSV out), against the same job done with
``ants.apply_transforms_to_points`` on the ANTs files of that same registration (``REG/stages``:
``syn_0GenericAffine.mat`` + ``syn_1InverseWarp.nii.gz``, the sample → atlas direction), also in a new
process with pandas reading and writing the CSV. Both are also timed in-process without the CSV
(atlasreg: ``RegistrationResult.load`` + ``map_points``; ANTs: one ``apply_transforms_to_points`` call,
which reads its files each call). Cells: 1M points inside the sample's tissue (voxels above the 60th
percentile, jittered within the voxel). Writes benchmarks/results/points_registration.json and .md.
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


def inflate_floor(path: str, repeats: int) -> dict:
    """Seconds to inflate the warp file once, from memory: zlib (ITK's) and ISA-L (atlasreg's)."""
    import zlib

    from isal import isal_zlib

    raw = Path(path).read_bytes()
    t_zlib, c_zlib, out = best_of(lambda: zlib.decompress(raw, 31), repeats)
    t_isal, c_isal, _ = best_of(lambda: isal_zlib.decompress(raw, 31), repeats)
    return {"compressed_bytes": len(raw), "uncompressed_bytes": len(out), "zlib_s": t_zlib, "zlib_cpu_s": c_zlib,
            "isal_s": t_isal, "isal_cpu_s": c_isal}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "points.json")
    ap.add_argument("--render", action="store_true", help="only rewrite the markdown from the JSON in --out")
    ap.add_argument("--registration", type=Path, default=None,
                    help="an atlasreg register result folder (ANTs backend): time `atlasreg points` on it")
    args = ap.parse_args(argv)
    if args.registration is not None:
        return bench_registration(args)
    if args.render:
        res = json.loads(args.out.read_text())
        args.out.with_suffix(".md").write_text(render(res))
        print(render(res))
        return res

    import ants
    import numba
    import pandas as pd

    import atlasreg as ar
    from atlasreg.transforms.files import load_transform

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
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
        del T

        t_e2e, c_e2e, _ = best_of(lambda: load_transform(files, src=fixed, dst=moving).map_points(pts),
                                  args.repeats)
        t_load, c_load, T = best_of(lambda: load_transform(files, src=fixed, dst=moving), args.repeats)
        t_map, c_map, ours = best_of(lambda: T.map_points(pts), args.repeats)

        # --- ANTs: same files, same points ---
        one = df.iloc[:1]
        ants.apply_transforms_to_points(3, one, files)  # warm-up (library load)
        t_ants_1, c_ants_1, _ = best_of(lambda: ants.apply_transforms_to_points(3, one, files), args.repeats)
        t_ants, c_ants, theirs_df = best_of(lambda: ants.apply_transforms_to_points(3, df, files), args.repeats)
        theirs = theirs_df[list("xyz")].to_numpy(float)

        floor = inflate_floor(files[0], max(2, args.repeats // 2))

    n = args.points
    ants_marginal = max(t_ants - t_ants_1, 1e-9)
    ants_marginal_cpu = max(c_ants - c_ants_1, 1e-9)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    res = {
        "task": "map points through affine + displacement field (ANTs SyN output files)",
        "points": n,
        "field_grid": list(map(int, shape)),
        "field_voxel_um": [50.0, 40.0, 40.0],
        "threads": {"numba": numba.get_num_threads(),
                    "itk": int(os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"])},
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "warmup": "numba kernels compiled/loaded and run on 1,000 and 200,000 points before timing; "
              "ANTs called once first; every time is the best of `repeats` runs",
        "load_average_1min": {"before": load_before, "after": load_after},
        "atlasreg": {"end_to_end_s": t_e2e, "end_to_end_cpu_s": c_e2e, "load_s": t_load, "load_cpu_s": c_load,
                     "map_s": t_map, "map_cpu_s": c_map, "points_per_s_map": n / t_map,
                     "points_per_cpu_s_map": n / c_map, "points_per_s_end_to_end": n / t_e2e},
        "ants": {"end_to_end_s": t_ants, "one_point_call_s": t_ants_1, "end_to_end_cpu_s": c_ants,
                 "one_point_call_cpu_s": c_ants_1, "points_per_s_end_to_end": n / t_ants,
                 "points_per_s_marginal": n / ants_marginal, "points_per_cpu_s_marginal": n / ants_marginal_cpu},
        "inflate_warp_once": floor,
        "ratio_end_to_end": t_ants / t_e2e,
        "ratio_end_to_end_cpu": c_ants / c_e2e,
        "ratio_per_point": ants_marginal / t_map,
        "ratio_per_point_cpu": ants_marginal_cpu / c_map,
        "max_abs_difference_um": float(np.nanmax(np.abs(ours - theirs))),
        "versions": {"python": platform.python_version(), "antspyx": ants.__version__, "numba": numba.__version__,
                     "atlasreg": ar.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    table = render(res)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return res


_ANTS_PEER = r"""
import sys, json, numpy as np, pandas as pd, ants
src, dst, mat, inv_warp, R = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], np.array(json.loads(sys.argv[5]))
df = pd.read_csv(src)
p = df[["x", "y", "z"]].to_numpy(float)
p = p @ R[:3, :3].T + R[:3, 3]   # the exact psl -> asr axis flip/permutation atlasreg applies first
out = ants.apply_transforms_to_points(3, pd.DataFrame(p, columns=["x", "y", "z"]), [mat, inv_warp],
                                      whichtoinvert=[True, False])
df[["x", "y", "z"]] = out[["x", "y", "z"]].to_numpy(float)
df.to_csv(dst, index=False)
"""


# The floor of any CSV-in, CSV-out tool in Python: a new process that only reads the cell table and writes it
# back with pyarrow's multithreaded CSV reader and writer (no transform, no pandas).
_CSV_FLOOR = r"""
import sys, pyarrow.csv as pc
pc.write_csv(pc.read_csv(sys.argv[1]), sys.argv[2])
"""


def bench_registration(args) -> dict:
    """``atlasreg points`` on a real registration vs ``ants.apply_transforms_to_points`` on its ANTs files."""
    import subprocess

    import ants
    import pandas as pd

    import atlasreg as ar
    from atlasreg.registration import RegistrationResult

    reg = args.registration
    st = reg / "stages"
    mat, inv_warp = st / "syn_0GenericAffine.mat", st / "syn_1InverseWarp.nii.gz"
    for f in (mat, inv_warp):
        if not f.is_file():
            raise SystemExit(f"{f} is missing: --registration needs a folder of `atlasreg register` (ANTs backend)")
    res = RegistrationResult.load(reg)
    rec = json.loads((reg / "record.json").read_text())
    sample_path = Path(rec["inputs"]["sample"]["path"])
    mg = res.moving_grid
    fixed_code = res.fixed_grid.space.orientation
    import tifffile

    img = tifffile.imread(sample_path)
    vol = ar.Volume(img, mg.spacing, space=mg.space)
    R = vol.reorient_transform(fixed_code, ar.Space("sample_r", mg.space.unit, fixed_code)).matrix
    rng = np.random.default_rng(0)
    idx = np.argwhere(img > np.percentile(img, 60))
    idx = idx[rng.choice(len(idx), args.points, replace=True)] + rng.uniform(-0.5, 0.5, (args.points, 3))
    pts = vol.index_to_physical(idx)
    n = len(pts)
    load_before = os.getloadavg()[0]
    env = {**os.environ}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cells = tmp / "cells.csv"
        pd.DataFrame(pts, columns=list("xyz")).to_csv(cells, index=False)
        ours_csv, theirs_csv = tmp / "ours.csv", tmp / "theirs.csv"
        cli = [str(Path(sys.executable).with_name("atlasreg")), "points", str(reg), str(cells), "-o", str(ours_csv),
               "--force"]
        peer = [sys.executable, "-c", _ANTS_PEER, str(cells), str(theirs_csv), str(mat), str(inv_warp),
                json.dumps(R.tolist())]

        def run(cmd):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"{cmd[:4]} failed: {r.stderr[-2000:]}")

        floor = [sys.executable, "-c", _CSV_FLOOR, str(cells), str(tmp / "floor.csv")]
        run(cli), run(peer), run(floor)  # warm-up: page cache, numba cache
        # interleaved, best of `repeats`
        t_cli, t_peer, t_floor = np.inf, np.inf, np.inf
        for _ in range(args.repeats):
            t = time.perf_counter(); run(cli); t_cli = min(t_cli, time.perf_counter() - t)
            t = time.perf_counter(); run(peer); t_peer = min(t_peer, time.perf_counter() - t)
            t = time.perf_counter(); run(floor); t_floor = min(t_floor, time.perf_counter() - t)
        ours = pd.read_csv(ours_csv)[list("xyz")].to_numpy(float)
        theirs = pd.read_csv(theirs_csv)[list("xyz")].to_numpy(float)
        # in-process, no CSV: atlasreg load + map vs one ANTs call (it reads its files on every call)
        pr = pts @ R[:3, :3].T + R[:3, 3]
        dfr = pd.DataFrame(pr, columns=list("xyz"))
        RegistrationResult.load(reg).transform.map_points(pts[:1000])
        t_ours_ip, c_ours_ip, _ = best_of(lambda: RegistrationResult.load(reg).transform.map_points(pts), args.repeats)
        t_load, _, loaded = best_of(lambda: RegistrationResult.load(reg), args.repeats)
        t_map, _, _ = best_of(lambda: loaded.transform.map_points(pts), args.repeats)
        call = lambda: ants.apply_transforms_to_points(3, dfr, [str(mat), str(inv_warp)], whichtoinvert=[True, False])
        call()
        t_ants_ip, c_ants_ip, _ = best_of(call, args.repeats)
        sizes = {"atlasreg_fields_zarr_bytes": sum(f.stat().st_size for f in (reg / "transforms").rglob("*")
                                                   if f.is_file() and "moving_to_fixed_fields.zarr" in f.parts),
                 "ants_inverse_warp_gz_bytes": inv_warp.stat().st_size}
    fin = np.isfinite(ours).all(1)
    import numba

    out = {
        "task": "atlasreg points REG cells.csv (1M cells of a real registration to the 25 um CCF) vs "
                "ants.apply_transforms_to_points on the ANTs files of that registration",
        "registration": str(reg), "points": n, "repeats": args.repeats,
        "fixed_grid": list(res.fixed_grid.shape), "moving_grid": list(mg.shape),
        "field_grids": {"ants_inverse_warp": list(ants.image_header_info(str(inv_warp))["dimensions"])},
        "sizes": sizes,
        "threads": {"numba": numba.get_num_threads(), "itk": int(os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"])},
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "end_to_end_csv_s": {"atlasreg_points_cli": t_cli, "ants_script": t_peer, "ratio": t_peer / t_cli,
                             "csv_only_floor": t_floor, "ratio_bound": t_peer / t_floor},
        "in_process_s": {"atlasreg_load_and_map": t_ours_ip, "atlasreg_load": t_load, "atlasreg_map": t_map,
                         "ants_call": t_ants_ip, "ratio": t_ants_ip / t_ours_ip,
                         "cpu_s": {"atlasreg": c_ours_ip, "ants": c_ants_ip}},
        "unmapped_by_atlasreg": int((~fin).sum()),
        "max_abs_difference_um": float(np.max(np.abs(ours[fin] - theirs[fin]))),
        "median_abs_difference_um": float(np.median(np.linalg.norm(ours[fin] - theirs[fin], axis=1))),
        "versions": {"python": platform.python_version(), "antspyx": ants.__version__, "atlasreg": ar.__version__},
    }
    target = args.out.with_name("points_registration.json") if args.out.name == "points.json" else args.out
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2) + "\n")
    md = render_registration(out)
    target.with_suffix(".md").write_text(md)
    print(md)
    return out


def render_registration(r: dict) -> str:
    e, i, la = r["end_to_end_csv_s"], r["in_process_s"], r["load_average_1min"]
    rows = [("`atlasreg points` vs a pandas + ANTs script, CSV in and out, new process, wall s",
             f"{e['atlasreg_points_cli']:.2f}", f"{e['ants_script']:.2f}", f"{e['ratio']:.1f}x"),
            ("in process, no CSV: load + map vs one ANTs call, wall s", f"{i['atlasreg_load_and_map']:.2f}",
             f"{i['ants_call']:.2f}", f"{i['ratio']:.1f}x"),
            ("  of which atlasreg load / map, wall s", f"{i['atlasreg_load']:.2f} / {i['atlasreg_map']:.2f}", "", ""),
            ("in process, CPU s (all threads)", f"{i['cpu_s']['atlasreg']:.2f}", f"{i['cpu_s']['ants']:.2f}",
             f"{i['cpu_s']['ants'] / max(i['cpu_s']['atlasreg'], 1e-9):.1f}x")]
    out = [f"# `atlasreg points` on {r['points']:,} cells of a real registration to the 25 µm CCF vs ANTs", "",
           f"Registration: the real light-sheet brain {r['moving_grid']} → allen_mouse_25um {r['fixed_grid']}; "
           f"ANTs' inverse warp {r['field_grids']['ants_inverse_warp']} "
           f"({r['sizes']['ants_inverse_warp_gz_bytes'] / 1e6:.1f} MB .nii.gz), atlasreg's fields "
           f"{r['sizes']['atlasreg_fields_zarr_bytes'] / 1e6:.1f} MB zarr (zstd chunks). "
           f"{r['threads']['numba']} numba / {r['threads']['itk']} ITK threads, best of {r['repeats']}, "
           f"interleaved; load average {la['before']:.1f} before, {la['after']:.1f} after. "
           f"atlasreg vs ANTs: median {r['median_abs_difference_um']:.1e} µm, max {r['max_abs_difference_um']:.1e} µm"
           f" ({r['unmapped_by_atlasreg']} cells left unmapped by atlasreg).", "",
           "| | atlasreg | ANTs | ratio |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    if "csv_only_floor" in e:
        out += ["", f"The floor: a new Python process that only reads these cells and writes them back with "
                    f"pyarrow's multithreaded CSV reader and writer (no transform, no pandas) takes "
                    f"{e['csv_only_floor']:.2f} s. No Python tool that reads and writes this CSV can be more than "
                    f"{e['ratio_bound']:.1f}x faster than the ANTs script; the rest of atlasreg's time is start-up "
                    f"(imports, numba loading its cached kernels) and reading its field."]
    return "\n".join(out) + "\n"


def render(res: dict) -> str:
    """The result as a markdown table (also written beside the JSON)."""
    a, b, f, n = res["atlasreg"], res["ants"], res["inflate_warp_once"], res["points"]
    la = res["load_average_1min"]
    rows = [
        ("end to end (load files + map), wall s", f"{a['end_to_end_s']:.2f}", f"{b['end_to_end_s']:.2f}",
         f"{res['ratio_end_to_end']:.1f}x"),
        ("end to end, CPU s (all threads)", f"{a['end_to_end_cpu_s']:.2f}", f"{b['end_to_end_cpu_s']:.2f}",
         f"{res['ratio_end_to_end_cpu']:.1f}x"),
        ("reading the files, wall s", f"{a['load_s']:.2f}", f"{b['one_point_call_s']:.2f} (1-point call)", ""),
        ("mapping (transform loaded), points/s", f"{n / a['map_s']:,.0f}", f"{b['points_per_s_marginal']:,.0f}",
         f"{res['ratio_per_point']:.1f}x"),
        ("mapping, points per CPU s", f"{a['points_per_cpu_s_map']:,.0f}", f"{b['points_per_cpu_s_marginal']:,.0f}",
         f"{res['ratio_per_point_cpu']:.1f}x"),
        ("inflating the warp once (floor), wall s", f"{f['isal_s']:.2f} (ISA-L)", f"{f['zlib_s']:.2f} (zlib)", ""),
    ]
    out = [f"# Mapping {n:,} points: atlasreg vs ants.apply_transforms_to_points", "",
           f"Affine + SyN warp {res['field_grid']} (ANTs files, {f['compressed_bytes'] / 1e6:.0f} MB .nii.gz), "
           f"{res['threads']['numba']} threads each, best of {res['repeats']}; load average "
           f"{la['before']:.1f} before, {la['after']:.1f} after; max |atlasreg - ANTs| = "
           f"{res['max_abs_difference_um']:.1e} µm.", "",
           "| | atlasreg | ANTs | ratio |", "|---|---|---|---|"]
    out += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]
    bound = b["end_to_end_cpu_s"] / f["isal_cpu_s"]
    out += ["", "What limits the ratios:", "",
            f"* End to end, both tools are bound by inflating the warp, one gzip stream that only one core can "
            f"inflate: ANTs (ITK's zlib) {f['zlib_cpu_s']:.2f} CPU s of its {b['one_point_call_cpu_s']:.2f} CPU s "
            f"1-point call; atlasreg (ISA-L) {f['isal_cpu_s']:.2f} CPU s of its {a['load_cpu_s']:.2f} CPU s load. "
            f"Even with reading and mapping free, atlasreg end to end could be at most {bound:.1f}x ANTs "
            f"(its whole CPU time over ISA-L's inflate), so 10x end to end is out of reach on these files.",
            "* ANTs' per-point rate is the difference of two timings (1M points minus 1 point), noisy on a loaded "
            "machine; the CPU-time ratio is the steadier figure. ANTs' per-point work took "
            f"{(b['end_to_end_cpu_s'] - b['one_point_call_cpu_s']) / max(b['end_to_end_s'] - b['one_point_call_s'], 1e-9):.2f}"
            f" CPU s per wall s here (one thread at most), atlasreg's mapping {a['map_cpu_s'] / a['map_s']:.2f} "
            f"(of {res['threads']['numba']} threads): on an idle machine the wall ratio could approach the CPU "
            "ratio times atlasreg's threads."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
