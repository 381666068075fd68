"""Speed of region annotation and projection matrices for millions of neuron nodes (real CCF 25 µm atlas).

Synthetic neurons (branching random walks of 10,000 nodes starting at random voxels inside the
brain) are annotated with their regions (region id, acronym, hemisphere of every node) and
summarised as a neuron x region cable-length matrix, at 1M, 3M and 10M nodes. Scaling should be
linear (time per node constant). The baseline is what a user writes without atlasreg: a Python loop
over the nodes with one annotation-array lookup each, timed on a subset and extrapolated.

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
        pts = np.empty((m, 3))
        pts[0] = seeds[i]
        step = 3.0 * d
        # position = parent position + step (parents precede children, so one pass over branches)
        pts[1:] = seeds[i] + np.cumsum(step[1:], axis=0)
        b = np.flatnonzero(branch)
        if b.size:
            # re-anchor each branch segment run at its branch parent
            run_start = b
            run_end = np.append(b[1:], m)
            for s, e in zip(run_start, run_end):
                pts[s:e] += pts[parent[s] - 1] + step[s] - pts[s]
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
        t = time.perf_counter()
        neurons = make_neurons(atlas, n, rng)
        t_make = time.perf_counter() - t
        pts = np.concatenate([x.points for x in neurons])
        t = time.perf_counter()
        ann = annotate_points(pts, atlas)
        t_ann = time.perf_counter() - t
        t = time.perf_counter()
        M = projection_matrix(neurons, atlas)
        t_mat = time.perf_counter() - t
        t = time.perf_counter()
        M5 = projection_matrix(neurons, atlas, level=5)
        t_mat5 = time.perf_counter() - t
        total = np.array([x.cable_length for x in neurons])
        err = float(np.max(np.abs(M.sum(axis=1).to_numpy() - total) / total))
        err5 = float(np.max(np.abs(M5.sum(axis=1).to_numpy() - total) / total))
        in_brain = float(np.mean(ann["region_id"].to_numpy() > 0))
        row = {"nodes": int(len(pts)), "neurons": len(neurons), "make_s": round(t_make, 3),
               "annotate_s": round(t_ann, 3), "matrix_s": round(t_mat, 3), "matrix_level5_s": round(t_mat5, 3),
               "annotate_ns_per_node": round(1e9 * t_ann / len(pts), 1),
               "matrix_ns_per_node": round(1e9 * t_mat / len(pts), 1), "regions": int(M.shape[1]),
               "max_rel_row_sum_error": err, "max_rel_row_sum_error_level5": err5,
               "fraction_nodes_in_brain": round(in_brain, 4)}
        rows.append(row)
        print(json.dumps(row))
        del neurons, pts, ann, M, M5

    # Baseline: per-node Python loop, on a subset, extrapolated per node.
    subset = make_neurons(atlas, 3 * NODES_PER_NEURON, rng)
    t_naive, done = naive_per_node(atlas, subset, limit=30_000)
    naive_ns = 1e9 * t_naive / done
    last = rows[-1]
    ours_ns = 1e9 * (last["annotate_s"] + last["matrix_s"]) / last["nodes"]
    first = rows[0]
    result = {
        "benchmark": "tracings: region annotation + cable-length-per-region matrix",
        "atlas": "Allen CCFv3 2017 annotation, 25 µm (528x320x456), real",
        "neurons": f"synthetic branching random walks, {NODES_PER_NEURON} nodes each, 3 µm steps",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "atlas_load_s": round(t_load, 2),
        "runs": rows,
        "scaling": {
            "annotate_time_ratio_last_vs_first": round(last["annotate_s"] / first["annotate_s"], 2),
            "matrix_time_ratio_last_vs_first": round(last["matrix_s"] / first["matrix_s"], 2),
            "node_ratio_last_vs_first": round(last["nodes"] / first["nodes"], 2),
        },
        "baseline": {"what": "per-node Python loop (midpoint voxel lookup + dict accumulation)",
                     "nodes_timed": done, "ns_per_node": round(naive_ns, 1),
                     "extrapolated_s_for_last_size": round(naive_ns * last["nodes"] / 1e9, 1)},
        "speedup_vs_baseline": round(naive_ns / ours_ns, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("scaling", "baseline", "speedup_vs_baseline")}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
