"""Speed of region annotation and projection matrices for millions of neuron nodes (real CCF 25 µm atlas).

Synthetic neurons (branching random walks of 10,000 nodes starting at random voxels inside the
brain) are annotated with their regions (region id, acronym, hemisphere of every node) and
summarised as a neuron x region cable-length matrix, at 1M, 3M and 10M nodes. Scaling should be
linear (time per node constant). The baseline is what a user writes without atlasreg: a Python loop
over the nodes with one annotation-array lookup each, timed on a subset and extrapolated.

Both wall-clock and CPU time (``time.process_time``: all threads of this process) are recorded; on a
shared machine the CPU time is the number to read, and the scaling check uses it.

The peer is navis (the Python neuron-analysis library users reach for): reading the 16 real fMOST SWC
files and their cable lengths, atlasreg vs navis in the same run. navis has no voxel-atlas projection
matrix, so that part is compared with the per-node loop only.

Run:  python benchmarks/bench_tracings.py [--sizes 1e6,3e6,1e7] [--data ../shared/data]
Writes benchmarks/results/tracings.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from atlasreg import Atlas, Space  # noqa: E402
from atlasreg.tracings import Neuron, annotate_points, projection_matrix  # noqa: E402

HERE = Path(__file__).resolve().parent
NODES_PER_NEURON = 10_000
REPEAT = 3
CCF = Space("ccf", "um", "asr")


def load_atlas(data: Path) -> Atlas:
    d = data / "atlas"
    return Atlas.load(annotation=d / "ABA_25um_2017_annotation.tif", ontology=d / "allen_structure_tree.csv",
                      voxel_size=25, file_orientation="ras", orientation="asr", space="ccf")


def make_neurons(atlas: Atlas, n_nodes: int, rng: np.random.Generator) -> list[Neuron]:
    """Branching random walks (3 µm steps, persistent direction) seeded at random in-brain voxels."""
    ann = atlas.labels.index
    inside = np.flatnonzero(ann.reshape(-1) != np.searchsorted(atlas.labels.table, 0))
    k = max(1, n_nodes // NODES_PER_NEURON)
    seeds = np.column_stack(np.unravel_index(rng.choice(inside, k), ann.shape)) * 25.0
    out = []
    m = NODES_PER_NEURON
    ids = np.arange(1, m + 1)
    for i in range(k):
        d = rng.normal(size=(m, 3))
        d = np.cumsum(d, axis=0) * 0.05 + rng.normal(size=3)  # slowly turning heading
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        parent = ids - 1
        branch = rng.random(m) < 0.02  # ~2 % of nodes start a branch from an earlier node
        branch[0] = False
        parent[branch] = (rng.random(branch.sum()) * (ids[branch] - 1)).astype(np.int64) + 1
        # position = parent position + step, summed along the path to the root by pointer doubling
        acc = 3.0 * d
        acc[0] = seeds[i]
        anc = parent - 1  # row of the parent; -1 at the root
        anc[0] = -1
        while (anc >= 0).any():
            has = anc >= 0
            acc[has] += acc[anc[has]]
            anc = np.where(has, anc[np.maximum(anc, 0)], -1)
        pts = acc
        parent[0] = -1
        df = pd.DataFrame({"id": ids, "type": np.full(m, 2), "x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2],
                           "radius": np.ones(m), "parent": parent})
        out.append(Neuron(df, CCF, name=f"syn{i:05d}"))
    return out


def naive_per_node(atlas: Atlas, neurons: list[Neuron], limit: int) -> tuple[float, int]:
    """The loop users write without vectorisation: per node, look up the voxel and add the edge length."""
    ann = np.asarray(atlas.labels.index)
    table = atlas.labels.table
    shape = ann.shape
    totals: dict[tuple[str, int], float] = {}
    done = 0
    t0 = time.perf_counter()
    for n in neurons:
        pts = n.points.tolist()
        pidx = n.parent_index().tolist()
        for i, p in enumerate(pidx):
            if p < 0:
                continue
            a, b = pts[i], pts[p]
            mid = [(a[j] + b[j]) / 2 / 25.0 for j in range(3)]
            v = [int(round(c)) for c in mid]
            rid = int(table[ann[v[0], v[1], v[2]]]) if all(0 <= v[j] < shape[j] for j in range(3)) else -1
            L = ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2) ** 0.5
            totals[(n.name, rid)] = totals.get((n.name, rid), 0.0) + L
            done += 1
            if done >= limit:
                return time.perf_counter() - t0, done
    return time.perf_counter() - t0, done


class Timer:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w
        self.cpu = time.process_time() - self.c


def best_of(fn, repeat: int = REPEAT) -> Timer:
    """Run ``fn`` ``repeat`` times; keep the fastest wall and CPU times (first runs pay page faults)."""
    best = None
    for _ in range(repeat):
        with Timer() as t:
            t.result = fn()
        if best is None:
            best = t
        else:
            best.wall, best.cpu = min(best.wall, t.wall), min(best.cpu, t.cpu)
            best.result = t.result
    return best


def peer_swc(data: Path) -> dict:
    """Read the 16 fMOST SWC files (timed, best of 3), then check both give the same cable lengths."""
    from atlasreg.tracings import read_swc

    files = sorted((data / "neurons" / "fmost_ccf25").glob("*.swc"))
    ta = best_of(lambda: [read_swc(f, space="ccf", unit="um", voxel_size=25.0) for f in files])
    ours = ta.result
    ours_len = [n.cable_length for n in ours]
    out = {"files": len(files), "nodes": int(sum(n.n_nodes for n in ours)),
           "atlasreg_read_s": {"wall": round(ta.wall, 3), "cpu": round(ta.cpu, 3)}}
    try:
        import navis
    except ImportError:
        out["navis"] = "not installed (pip install navis)"
        return out
    navis.set_loggers("ERROR")
    tn = best_of(lambda: [navis.read_swc(str(f), parallel=False, precision=64) for f in files])
    theirs_len = [float(n.cable_length) * 25.0 for n in tn.result]  # navis keeps the file's voxel units
    out["navis_version"] = navis.__version__
    out["navis_read_s"] = {"wall": round(tn.wall, 3), "cpu": round(tn.cpu, 3)}
    out["navis_over_atlasreg_cpu"] = round(tn.cpu / max(ta.cpu, 1e-9), 2)
    out["max_rel_cable_length_difference"] = float(np.max(np.abs(np.array(ours_len) - theirs_len) /
                                                          np.array(theirs_len)))
    return out


def run_size(atlas: Atlas, n: int, rng: np.random.Generator) -> dict:
    """Time annotation and projection matrices for ``n`` synthetic nodes."""
    t = time.perf_counter()
    neurons = make_neurons(atlas, n, rng)
    t_make = time.perf_counter() - t
    pts = np.concatenate([x.points for x in neurons])
    ta = best_of(lambda: annotate_points(pts, atlas))
    tm = best_of(lambda: projection_matrix(neurons, atlas))
    t5 = best_of(lambda: projection_matrix(neurons, atlas, level=5))
    ann, M, M5 = ta.result, tm.result, t5.result
    total = np.array([x.cable_length for x in neurons])
    err = float(np.max(np.abs(M.sum(axis=1).to_numpy() - total) / total))
    err5 = float(np.max(np.abs(M5.sum(axis=1).to_numpy() - total) / total))
    in_brain = float(np.mean(ann["region_id"].to_numpy() > 0))
    return {"nodes": int(len(pts)), "neurons": len(neurons), "make_s": round(t_make, 3),
            "annotate_wall_s": round(ta.wall, 3), "annotate_cpu_s": round(ta.cpu, 3),
            "matrix_wall_s": round(tm.wall, 3), "matrix_cpu_s": round(tm.cpu, 3),
            "matrix_level5_wall_s": round(t5.wall, 3), "matrix_level5_cpu_s": round(t5.cpu, 3),
            "annotate_cpu_ns_per_node": round(1e9 * ta.cpu / len(pts), 1),
            "matrix_cpu_ns_per_node": round(1e9 * tm.cpu / len(pts), 1), "regions": int(M.shape[1]),
            "max_rel_row_sum_error": err, "max_rel_row_sum_error_level5": err5,
            "fraction_nodes_in_brain": round(in_brain, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e6,3e6,1e7", help="node counts, comma separated")
    ap.add_argument("--data", default=os.environ.get("ATLASREG_DATA", str(HERE.parent.parent / "shared" / "data")))
    ap.add_argument("--out", default=str(HERE / "results" / "tracings.json"))
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    atlas = load_atlas(Path(args.data))
    atlas.labels, atlas.hemispheres  # noqa: B018 - load before timing
    t_load = time.perf_counter() - t
    # warm-up: compile numba kernels outside the timings
    warm = make_neurons(atlas, NODES_PER_NEURON, rng)
    annotate_points(warm[0].points, atlas)
    projection_matrix(warm, atlas)

    rows = []
    for n in sizes:
        row = run_size(atlas, n, rng)  # its arrays are freed before the next, larger size
        rows.append(row)
        print(json.dumps(row), flush=True)

    # Baseline: per-node Python loop, on a subset, extrapolated per node (CPU time).
    subset = make_neurons(atlas, 3 * NODES_PER_NEURON, rng)
    c0 = time.process_time()
    t_naive, done = naive_per_node(atlas, subset, limit=30_000)
    naive_ns = 1e9 * (time.process_time() - c0) / done
    last, first = rows[-1], rows[0]
    ours_ns = 1e9 * (last["annotate_cpu_s"] + last["matrix_cpu_s"]) / last["nodes"]
    result = {
        "benchmark": "tracings: region annotation + cable-length-per-region matrix",
        "atlas": "Allen CCFv3 2017 annotation, 25 µm (528x320x456), real",
        "neurons": f"synthetic branching random walks, {NODES_PER_NEURON} nodes each, 3 µm steps",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 1)},
        "atlas_load_s": round(t_load, 2),
        "runs": rows,
        "scaling_cpu": {
            "node_ratio_last_vs_first": round(last["nodes"] / first["nodes"], 2),
            "annotate_time_ratio_last_vs_first": round(last["annotate_cpu_s"] / first["annotate_cpu_s"], 2),
            "matrix_time_ratio_last_vs_first": round(last["matrix_cpu_s"] / first["matrix_cpu_s"], 2),
        },
        "baseline": {"what": "per-node Python loop (midpoint voxel lookup + dict accumulation)",
                     "nodes_timed": done, "cpu_ns_per_node": round(naive_ns, 1),
                     "extrapolated_cpu_s_for_last_size": round(naive_ns * last["nodes"] / 1e9, 1)},
        "speedup_vs_baseline_cpu": round(naive_ns / ours_ns, 1),
        "peer_swc_read": peer_swc(Path(args.data)),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("scaling_cpu", "baseline", "speedup_vs_baseline_cpu",
                                             "peer_swc_read")}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
