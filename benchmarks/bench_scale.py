"""Scale benchmark: blockwise warping and chunked point mapping, side by side with the in-memory paths.

Three measurements, each in a fresh subprocess so its peak memory (VmHWM) is its own:

1. throughput  -- a volume that fits in memory warped through affine + displacement field, by
   SimpleITK's in-memory ``Resample`` and by ``atlasreg.distributed.warp_blockwise`` (writing a
   multiscale OME-Zarr), alternating, best of ``--repeats``; voxels/s per core (same thread count).
2. big         -- a synthetic uint16 volume of ``--big-gb`` GiB generated lazily by dask, warped
   through affine + displacement field into an OME-Zarr of the same size: peak memory and
   throughput; a watcher thread samples resident memory, the load average and what a reader
   would see at the output path (it must not exist, nor look complete, until the warp returns).
3. points      -- ``--points`` points in a Parquet file mapped through affine + displacement field +
   region lookup in the real 25 µm CCF annotation: chunked file -> file (``map_points_file``)
   against the single-chunk in-memory path (read all, ``map_points`` once, ``region_of`` once,
   write all); peak memory and throughput of each.

Run: ``nice -n 19 python benchmarks/bench_scale.py [--big-gb 8] [--points 100000000] [--threads 2]
[--only throughput,big,points]`` (a partial run keeps the other sections of the last result).
Writes ``benchmarks/results/scale.json`` and ``scale.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA = Path(os.environ.get("ATLASREG_DATA", HERE.parent.parent / "shared" / "data"))


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it excludes the parent's before exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (a load-independent measure of work)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# -- shared inputs ----------------------------------------------------------------------------------------
def smooth_field(shape, amplitude, seed):
    import numpy as np
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    u = np.stack([gaussian_filter(rng.standard_normal(shape), 2.0) for _ in range(3)], axis=-1)
    return u * (amplitude / np.abs(u).max())


def pull_chain(shape, spacing, target="fixed", source="moving"):
    """The pull-back target -> source: an affine (rotation, scaling, shift), then a smooth field.

    The field's grid covers the whole volume (ITK gives zero displacement outside its field;
    atlasreg's ``outside="zero"`` does the same), 1/16 of the volume per node.
    """
    import numpy as np

    import atlasreg as ar

    ext = np.asarray(shape) * np.asarray(spacing)
    A = ar.Affine.from_rotation([3.0, -4.0, 5.0], src=target, dst="mid", center=ext / 2)
    A = ar.Affine(A.matrix @ np.diag([1.02, 0.98, 1.01, 1.0]) + np.c_[np.zeros((4, 3)), [7.3, -4.1, 2.9, 0]],
                  target, "mid")
    nodes = (17, 17, 17)
    node_sp = ext * 1.25 / (np.asarray(nodes) - 1)
    u = smooth_field(nodes, 4.0 * float(np.max(spacing)), seed=7)
    F = ar.DisplacementField(u, spacing=node_sp, origin=-0.125 * ext, src="mid", dst=source, outside="zero")
    return A, F


# -- 1. throughput against SimpleITK ---------------------------------------------------------------------
def child_throughput(args) -> dict:
    import numpy as np
    import SimpleITK as sitk
    from scipy.ndimage import gaussian_filter

    import atlasreg as ar
    from atlasreg.distributed import warp_blockwise

    n = args.fit_size
    threads = args.threads
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    rng = np.random.default_rng(0)
    small = gaussian_filter(rng.standard_normal((n // 4,) * 3).astype(np.float32), 1.5)
    from scipy.ndimage import zoom

    src = np.clip(zoom(small, 4, order=1) * 9000 + 20000, 0, 65535).astype(np.uint16)[:n, :n, :n]
    spacing = (2.0, 2.0, 2.0)
    vol = ar.Volume(src, spacing, space="moving")
    A, F = pull_chain(src.shape, spacing)
    T = ar.Sequence([A, F])
    grid = ar.Grid(src.shape, spacing, ar.Space("fixed"))
    nvox = int(np.prod(src.shape))

    # SimpleITK: the same pull-back (ITK's CompositeTransform applies the LAST transform added first).
    img = vol.to_sitk()
    aff = sitk.AffineTransform(3)
    aff.SetMatrix(A.matrix[:3, :3].ravel().tolist())
    aff.SetTranslation(A.matrix[:3, 3].tolist())
    disp = sitk.GetImageFromArray(np.ascontiguousarray(F.displacement.transpose(2, 1, 0, 3)), isVector=True)
    disp.SetSpacing(tuple(float(v) for v in F.spacing))
    disp.SetOrigin(tuple(float(v) for v in F.origin))
    comp = sitk.CompositeTransform([sitk.DisplacementFieldTransform(disp), aff])
    probe = np.array([[101.0, 233.0, 87.0], [400.0, 50.0, 300.0]])
    agree = max(np.abs(np.array(comp.TransformPoint(p.tolist())) - T.map_points(p[None])[0]).max() for p in probe)

    work = Path(args.workdir)
    times = {"sitk": [], "atlasreg_blockwise": []}
    cpu = {"sitk": [], "atlasreg_blockwise": []}  # CPU seconds of all threads: less sensitive to load
    for rep in range(args.repeats):
        c, t = time.process_time(), time.perf_counter()
        out_sitk = sitk.Resample(img, img, comp, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        times["sitk"].append(time.perf_counter() - t)
        cpu["sitk"].append(time.process_time() - c)
        out = work / "fit.ome.zarr"
        c, t = time.process_time(), time.perf_counter()
        res = warp_blockwise(vol, T, grid, out, dtype="float32", chunks=args.chunks, num_workers=threads,
                             overwrite=True, progress=False)
        times["atlasreg_blockwise"].append(time.perf_counter() - t)
        cpu["atlasreg_blockwise"].append(time.process_time() - c)
    ours = res.volume.numpy()
    theirs = sitk.GetArrayFromImage(out_sitk).transpose(2, 1, 0)
    diff = np.abs(ours.astype(np.float64) - theirs)
    best = {k: min(v) for k, v in times.items()}
    per_core = {k: nvox / best[k] / threads for k in best}
    return {
        "volume": {"shape": list(src.shape), "dtype": "uint16", "mb": src.nbytes / 2**20},
        "transform": "affine (rotation + scaling) then 17^3-node displacement field, linear interpolation",
        "threads": threads, "repeats": args.repeats, "seconds_all": times, "seconds_best": best,
        "voxels_per_s_per_core": per_core,
        "ratio_atlasreg_to_sitk": per_core["atlasreg_blockwise"] / per_core["sitk"],
        "cpu_seconds_all": cpu, "voxels_per_cpu_second": {k: nvox / min(v) for k, v in cpu.items()},
        "ratio_atlasreg_to_sitk_per_cpu_second": min(cpu["sitk"]) / min(cpu["atlasreg_blockwise"]),
        "atlasreg_output": f"multiscale OME-Zarr, {res.levels} levels, chunks {args.chunks}",
        "point_agreement_max_um": float(agree),
        "output_abs_diff": {"median": float(np.median(diff)), "p999": float(np.quantile(diff, 0.999)),
                            "max": float(diff.max()), "intensity_range": float(src.max() - src.min())},
        "peak_mb": peak_mb(),
    }


# -- 2. the big volume ----------------------------------------------------------------------------------
def _big_source(gib: float):
    """A lazily generated uint16 volume of about ``gib`` GiB (shape ~ 2:2:1), separable texture."""
    import dask.array as da
    import numpy as np

    vox = gib * 2**30 / 2
    z = max(64, int(round((vox / 4) ** (1 / 3) / 64)) * 64)
    shape = (2 * z, 2 * z, z)
    tables = [((np.arange(s) * (37 + 11 * a)) % 3001).astype(np.uint16) for a, s in enumerate(shape)]

    def texture(block_info=None):
        loc = block_info[None]["array-location"]
        a, b, c = (tables[i][loc[i][0]:loc[i][1]] for i in range(3))
        return a[:, None, None] + b[None, :, None] + c[None, None, :]

    return da.map_blocks(texture, chunks=tuple((64,) * (s // 64) for s in shape), dtype=np.uint16)


class _Watch:
    """Samples this process's RSS and what a reader would see at the output path while a warp runs.

    Every ``every`` seconds: resident memory (psutil), whether ``out`` exists, whether
    ``is_complete(out)`` holds, how many blocks are marked done in ``out.partial/done``, and the
    ``status`` attribute of the output being built. The promise checked: ``out`` never exists (and
    nothing looks complete) before ``warp_blockwise`` returns.
    """

    def __init__(self, out: Path, every: float = 5.0):
        import threading

        import psutil

        self.out, self.every, self.proc = out, every, psutil.Process()
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _status(self) -> str | None:
        meta = self.out.with_name(self.out.name + ".partial") / self.out.name / ".zattrs"
        try:
            return json.loads(meta.read_text()).get("atlasreg", {}).get("status")
        except (OSError, ValueError):
            return None

    def _run(self) -> None:
        from atlasreg.distributed import is_complete

        t0 = time.perf_counter()
        done = self.out.with_name(self.out.name + ".partial") / "done"
        while not self.stop.wait(self.every):
            try:
                ndone = len(os.listdir(done))
            except OSError:
                ndone = None
            self.samples.append({"t": round(time.perf_counter() - t0, 1), "rss_mb": self.proc.memory_info().rss / 2**20,
                                 "output_exists": self.out.exists(), "output_complete": is_complete(self.out),
                                 "blocks_done": ndone, "partial_status": self._status(),
                                 "loadavg": loadavg()})

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def summary(self) -> dict:
        s = self.samples
        return {"samples": len(s), "every_s": self.every,
                "max_sampled_rss_mb": max((x["rss_mb"] for x in s), default=None),
                "output_existed_during_run": any(x["output_exists"] for x in s),
                "output_looked_complete_during_run": any(x["output_complete"] for x in s),
                "partial_statuses_seen": sorted({str(x["partial_status"]) for x in s}),
                "blocks_done_last_sample": s[-1]["blocks_done"] if s else None,
                "loadavg_1min_mean": (sum(x["loadavg"][0] for x in s) / len(s)) if s else None,
                "trace": s[:: max(1, len(s) // 40)]}


def child_big(args) -> dict:
    import resource

    import numpy as np

    import atlasreg as ar
    from atlasreg.distributed import is_complete, warp_blockwise

    base = peak_mb()
    src = _big_source(args.big_gb)
    spacing = (1.0, 1.0, 1.0)
    vol = ar.Volume(src, spacing, space="moving")
    A, F = pull_chain(src.shape, spacing)
    grid = ar.Grid(src.shape, spacing, ar.Space("fixed"))
    out = Path(args.workdir) / "big.ome.zarr"
    cpu = cpu_seconds()
    t = time.perf_counter()
    with _Watch(out) as watch:
        res = warp_blockwise(vol, ar.Sequence([A, F]), grid, out, dtype="uint16", chunks=args.chunks,
                             num_workers=args.threads, overwrite=True, progress=False)
    secs = time.perf_counter() - t
    cpu = cpu_seconds() - cpu
    complete_after = is_complete(out)
    partial_left = out.with_name(out.name + ".partial").exists()
    nvox = int(np.prod(src.shape))
    sample = np.asarray(res.volume.data[::97, ::89, ::83].compute())
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return {"shape": list(src.shape), "gib": src.nbytes / 2**30, "seconds": secs, "levels": res.levels,
            "voxels_per_s": nvox / secs, "voxels_per_s_per_core": nvox / secs / args.threads,
            "threads": args.threads, "cpu_seconds": cpu, "voxels_per_cpu_second": nvox / cpu,
            "nice": os.nice(0), "peak_mb": peak_mb(),
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "interpreter_mb": base,
            "blocks_computed": res.computed, "output_bytes_on_disk": size,
            "output_nonzero_fraction": float(np.mean(sample > 0)),
            "completion": {"complete_after_return": complete_after, "partial_folder_left": partial_left,
                           **watch.summary()}}


# -- 3. points ---------------------------------------------------------------------------------------------
def _atlas():
    import atlasreg as ar

    import numpy as np

    atlas = ar.Atlas.load(annotation=DATA / "atlas" / "ABA_25um_2017_annotation.tif",
                          ontology=DATA / "atlas" / "allen_structure_tree.csv", voxel_size=25,
                          file_orientation="ras", orientation="asr", space="ccf")
    atlas.region_of(np.array([[5000.0, 3000.0, 5000.0]]))  # load the annotation before any timing
    return atlas


def _points_transform():
    """sample -> ccf: an affine then a smooth field over the CCF (µm)."""
    import numpy as np

    import atlasreg as ar

    ext = np.array([13200.0, 8000.0, 11400.0])
    A = ar.Affine.from_rotation([2.0, -3.0, 4.0], src="sample", dst="mid", center=ext / 2)
    nodes = np.array([34, 22, 30])
    u = smooth_field(tuple(nodes), 200.0, seed=11)
    F = ar.DisplacementField(u, spacing=ext * 1.2 / (nodes - 1), origin=-0.1 * ext, src="mid", dst="ccf")
    return ar.Sequence([A, F])


def make_points(path: Path, n: int, row_group: int = 1_000_000) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    lo, hi = np.array([500.0, 300.0, 400.0]), np.array([12700.0, 7700.0, 11000.0])
    writer = None
    for a in range(0, n, row_group):
        m = min(row_group, n - a)
        p = rng.uniform(lo, hi, (m, 3))
        t = pa.table({"x": p[:, 0], "y": p[:, 1], "z": p[:, 2], "cell": np.arange(a, a + m, dtype=np.int64)})
        if writer is None:
            writer = pq.ParquetWriter(str(path), t.schema)
        writer.write_table(t)
    writer.close()


def child_points_chunked(args) -> dict:
    from atlasreg.distributed import map_points_file

    atlas = _atlas()
    T = _points_transform()
    base = peak_mb()
    out = Path(args.workdir) / "points_out.parquet"
    cpu = cpu_seconds()
    t = time.perf_counter()
    res = map_points_file(Path(args.workdir) / "points.parquet", out, T, annotate=atlas, chunk_size=1_000_000,
                          num_workers=args.threads, overwrite=True, progress=False)
    secs = time.perf_counter() - t
    return {"seconds": secs, "cpu_seconds": cpu_seconds() - cpu, "rows": res.rows, "chunks": res.computed,
            "points_per_s": res.rows / secs,
            "peak_mb": peak_mb(), "interpreter_and_atlas_mb": base}


def child_points_inmemory(args) -> dict:
    import numpy as np
    import pandas as pd

    atlas = _atlas()
    T = _points_transform()
    base = peak_mb()
    out = Path(args.workdir) / "points_out_mem.parquet"
    cpu = cpu_seconds()
    t = time.perf_counter()
    df = pd.read_parquet(Path(args.workdir) / "points.parquet")
    pts = df[["x", "y", "z"]].to_numpy()
    mapped = T.map_points(pts)
    ok = np.all(np.isfinite(mapped), axis=1)
    ids = np.full(len(mapped), -1, np.int64)
    ids[ok] = atlas.region_of(mapped[ok])
    df["x"], df["y"], df["z"] = mapped[:, 0], mapped[:, 1], mapped[:, 2]
    df["region"] = ids
    df.to_parquet(out, index=False)
    secs = time.perf_counter() - t
    return {"seconds": secs, "cpu_seconds": cpu_seconds() - cpu, "rows": len(df), "points_per_s": len(df) / secs,
            "peak_mb": peak_mb(),
            "interpreter_and_atlas_mb": base}


def check_points_equal(workdir: Path) -> dict:
    """Compare the two point outputs one column at a time."""
    import numpy as np
    import pyarrow.parquet as pq

    same, worst, n = True, 0.0, 0
    for c in ("x", "y", "z", "region", "cell"):
        x = pq.read_table(workdir / "points_out.parquet", columns=[c]).column(0).to_numpy()
        y = pq.read_table(workdir / "points_out_mem.parquet", columns=[c]).column(0).to_numpy()
        n = len(x)
        if len(x) != len(y):
            return {"identical": False, "rows": [len(x), len(y)]}
        eq = (x == y) | (np.isnan(x) & np.isnan(y)) if x.dtype.kind == "f" else (x == y)
        same &= bool(eq.all())
        if x.dtype.kind == "f" and not eq.all():
            worst = max(worst, float(np.nanmax(np.abs(x - y))))
        del x, y
    return {"rows_compared": n, "identical": same, "max_coordinate_difference": worst}


# -- driver ------------------------------------------------------------------------------------------------
CHILDREN = {"throughput": child_throughput, "big": child_big, "points_chunked": child_points_chunked,
            "points_inmemory": child_points_inmemory}


def run_child(name: str, args, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--workdir", args.workdir, "--threads", str(args.threads),
           "--fit-size", str(args.fit_size), "--big-gb", str(args.big_gb), "--chunks", str(args.chunks),
           "--repeats", str(args.repeats), "--points", str(args.points)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "NUMBA_NUM_THREADS": str(args.threads),
           "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(args.threads)}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr[-4000:], "returncode": proc.returncode}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_seconds_with_startup"] = time.perf_counter() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fit-size", type=int, default=384, help="edge of the in-memory volume (voxels)")
    ap.add_argument("--big-gb", type=float, default=8.0, help="size of the lazily generated volume (GiB)")
    ap.add_argument("--chunks", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--points", type=int, default=100_000_000)
    ap.add_argument("--only", default=None, help="comma list of: throughput,big,points")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return

    import psutil

    own_tmp = args.workdir is None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="atlasreg_bench_scale_")
    work = Path(args.workdir)
    only = set((args.only or "throughput,big,points").split(","))
    result = {"machine": {"cpus": os.cpu_count(), "ram_gb": psutil.virtual_memory().total / 2**30,
                          "python": platform.python_version(), "loadavg_start": loadavg(),
                          "nice": os.nice(0)},
              "settings": vars(args).copy()}
    try:
        if "throughput" in only:
            print("throughput: SimpleITK Resample vs blockwise warp ...", flush=True)
            result["throughput"] = run_child("throughput", args, 3600)
            result["throughput"]["loadavg"] = loadavg()
            print(json.dumps(result["throughput"], indent=1)[:1500], flush=True)
        if "big" in only:
            print(f"big: {args.big_gb} GiB lazily generated volume ...", flush=True)
            result["big"] = run_child("big", args, 4 * 3600)
            result["big"]["loadavg"] = loadavg()
            print(json.dumps(result["big"], indent=1), flush=True)
        if "points" in only:
            n = args.points
            # The in-memory path holds the table, copies of the points, the mapped points and arrow buffers
            # (~150 bytes a point); on a shared machine it may take at most half of what is free.
            need_gb = n * 150 / 2**30
            avail = psutil.virtual_memory().available / 2**30
            if need_gb > 0.5 * avail:
                n = int(0.5 * avail / 150 * 2**30) // 1_000_000 * 1_000_000
                result["points_scaled_down"] = {"asked": args.points, "ran": n, "available_gb": avail}
                args.points = n
            print(f"points: {n} points ...", flush=True)
            t = time.perf_counter()
            make_points(work / "points.parquet", n)
            gen = time.perf_counter() - t
            chunked = run_child("points_chunked", args, 4 * 3600)
            inmem = run_child("points_inmemory", args, 4 * 3600)
            eq = check_points_equal(work) if "error" not in chunked and "error" not in inmem else None
            pts = {"n": n, "input_mb": (work / "points.parquet").stat().st_size / 2**20, "generate_seconds": gen,
                   "transform": "affine then 34x22x30-node displacement field, region lookup in the 25 um CCF",
                   "chunked_file_to_file": chunked, "single_chunk_in_memory": inmem, "outputs_equal": eq,
                   "loadavg": loadavg()}
            if "error" not in chunked and "error" not in inmem:
                pts["throughput_ratio_chunked_to_inmemory"] = chunked["points_per_s"] / inmem["points_per_s"]
            if "points_scaled_down" in result:
                # The chunked path needs no more memory for the full count: run it alone at that size.
                asked = result["points_scaled_down"]["asked"]
                for f in work.glob("points*.parquet"):
                    f.unlink()
                make_points(work / "points.parquet", asked)
                args.points = asked
                full = run_child("points_chunked", args, 4 * 3600)
                full["n"] = asked
                pts["chunked_file_to_file_full_size"] = full
            result["points"] = pts
            print(json.dumps(pts, indent=1), flush=True)
    finally:
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)
    result["machine"]["loadavg_end"] = loadavg()
    RESULTS.mkdir(exist_ok=True)
    previous = RESULTS / "scale.json"
    if args.only and previous.exists():
        # A partial rerun keeps the other sections of the last full run (each records its own load).
        old = json.loads(previous.read_text())
        for key in ("throughput", "big", "points", "points_scaled_down"):
            if key not in result and key in old and not (key == "points_scaled_down" and "points" in only):
                result[key] = old[key]
    (RESULTS / "scale.json").write_text(json.dumps(result, indent=2, default=float))
    (RESULTS / "scale.md").write_text(summary_md(result))
    print((RESULTS / "scale.md").read_text())


def _best_cpu(t: dict, tool: str) -> str:
    if "cpu_seconds_all" not in t:
        return "- | -"
    return f"{min(t['cpu_seconds_all'][tool]):.1f} | {t['voxels_per_cpu_second'][tool] / 1e6:.2f} M"


def summary_md(r: dict) -> str:
    lines = ["# Scale benchmark (benchmarks/bench_scale.py)", "",
             f"Machine: {r['machine']['cpus']} CPUs, {r['machine']['ram_gb']:.0f} GB RAM, load average "
             f"{r['machine']['loadavg_start']} at start, {r['machine'].get('loadavg_end')} at end of the last "
             f"invocation, run at nice {r['machine'].get('nice')} beside other jobs (shared machine: timings are "
             "noisy; the warp comparison alternates the two tools, best of N, so both see similar load).", ""]
    t = r.get("throughput")
    if t and "error" not in t:
        lines += ["## Warp throughput vs SimpleITK (volume in memory)", "",
                  f"{t['volume']['shape']} uint16, {t['transform']}, {t['threads']} threads each, best of "
                  f"{t['repeats']}.", "",
                  "| tool | seconds | voxels/s/core | CPU seconds | voxels per CPU second |", "|---|---|---|---|---|",
                  f"| SimpleITK Resample (in memory) | {t['seconds_best']['sitk']:.2f} | "
                  f"{t['voxels_per_s_per_core']['sitk'] / 1e6:.2f} M | {_best_cpu(t, 'sitk')} |",
                  f"| atlasreg warp_blockwise (to OME-Zarr + pyramid) | {t['seconds_best']['atlasreg_blockwise']:.2f} "
                  f"| {t['voxels_per_s_per_core']['atlasreg_blockwise'] / 1e6:.2f} M | "
                  f"{_best_cpu(t, 'atlasreg_blockwise')} |", "",
                  f"Ratio atlasreg / SimpleITK per core: **{t['ratio_atlasreg_to_sitk']:.2f}** (target >= 0.7)"
                  + (f"; per CPU second {t['ratio_atlasreg_to_sitk_per_cpu_second']:.2f}. "
                     if "ratio_atlasreg_to_sitk_per_cpu_second" in t else ". ") +
                  f"Outputs differ by median {t['output_abs_diff']['median']:.3g}, max "
                  f"{t['output_abs_diff']['max']:.3g} (intensity range {t['output_abs_diff']['intensity_range']:.0f}). "
                  f"Load average after this part: {t.get('loadavg')}.",
                  ""]
    b = r.get("big")
    if b and "error" not in b:
        lines += ["## Big volume (lazily generated, never in memory)", "",
                  f"{b['shape']} uint16 = {b['gib']:.2f} GiB through affine + displacement field into an OME-Zarr "
                  f"of the same size ({b['levels']} levels): {b['seconds']:.0f} s, "
                  f"{b['voxels_per_s_per_core'] / 1e6:.2f} M voxels/s/core, **peak memory {b['peak_mb']:.0f} MB** "
                  f"(interpreter {b['interpreter_mb']:.0f} MB; target < 2048 MB)"
                  + (f"; {b['cpu_seconds']:.0f} CPU seconds." if "cpu_seconds" in b else "."), ""]
        if "completion" in b:
            c = b["completion"]
            lines += [f"Peak RSS: VmHWM {b['peak_mb']:.0f} MB, getrusage ru_maxrss {b['ru_maxrss_mb']:.0f} MB, "
                      f"largest of {c['samples']} psutil samples (every {c['every_s']:.0f} s) "
                      f"{c['max_sampled_rss_mb']:.0f} MB. Ran at nice {b.get('nice')} beside other jobs: 1-min load "
                      f"average {c.get('loadavg_1min_mean') or float('nan'):.1f} on average during the warp, "
                      f"{b.get('loadavg')} at the end (2 cores).", "",
                      f"Completion: while the warp ran, the output path existed in "
                      f"{'some' if c['output_existed_during_run'] else 'none'} of the samples and looked complete "
                      f"in {'some' if c['output_looked_complete_during_run'] else 'none'}; the work copy under "
                      f"`.partial/` had status {c['partial_statuses_seen']} (last sample: "
                      f"{c['blocks_done_last_sample']} blocks marked done); after return: complete = "
                      f"{c['complete_after_return']}, `.partial/` left = {c['partial_folder_left']}.", ""]
    p = r.get("points")
    if p and "chunked_file_to_file" in p and "error" not in p["chunked_file_to_file"]:
        c, m = p["chunked_file_to_file"], p["single_chunk_in_memory"]
        def cpu(x):
            return f"{x['cpu_seconds']:.0f}" if "cpu_seconds" in x else "-"

        lines += ["## Points", "", f"{p['n']:,} points (Parquet, {p['input_mb']:.0f} MB), {p['transform']}.", "",
                  "| path | seconds | CPU seconds | points/s | peak memory |", "|---|---|---|---|---|",
                  f"| chunked file -> file (map_points_file) | {c['seconds']:.1f} | {cpu(c)} | "
                  f"{c['points_per_s'] / 1e6:.2f} M | {c['peak_mb']:.0f} MB |"]
        if "error" not in m:
            lines += [f"| single chunk in memory | {m['seconds']:.1f} | {cpu(m)} | {m['points_per_s'] / 1e6:.2f} M | "
                      f"{m['peak_mb']:.0f} MB |", "",
                      f"Throughput ratio chunked / in-memory: **{p['throughput_ratio_chunked_to_inmemory']:.2f}** "
                      f"(target >= 0.5). Outputs identical: {p['outputs_equal']}. Load average after this part: "
                      f"{p.get('loadavg')}."]
        if "points_scaled_down" in r:
            lines += ["", f"Scaled down from {r['points_scaled_down']['asked']:,} points: the in-memory comparison "
                          f"would not fit in the {r['points_scaled_down']['available_gb']:.1f} GB available."]
        f = p.get("chunked_file_to_file_full_size")
        if f and "error" not in f:
            lines += ["", f"The chunked path alone at {f['n']:,} points: {f['seconds']:.0f} s "
                          f"({cpu(f)} CPU seconds), {f['points_per_s'] / 1e6:.2f} M points/s, "
                          f"**peak memory {f['peak_mb']:.0f} MB**."]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
