"""Inverting strong displacement fields: atlasreg's Newton solver vs SimpleITK's ``InvertDisplacementField``.

Fields: u_x = a * 8 * tanh((x - 32) / 8) on a 64^3 grid (unit spacing), det J at the centre 1 + a, from 0.2
(a = -0.8, a 5x compression) to 5 (a = 4, a 5x stretch); a = 1.5 is issue 13's example. Every grid node y
is inverted; the error is the residual |F(x) - y| of the returned x, measured with atlasreg's forward map
(trilinear, as ITK's). Scored on the nodes with 12 <= x <= 52 (the stretch; away from the grid's edge,
where ITK's inverter lacks the values beyond the grid), for every method alike.

Methods, in one run on the same field:

* atlasreg ``F.inverse().map_points(nodes)`` (damped Newton, per point, tol 1e-6);
* SimpleITK ``InvertDisplacementField`` (ITK's iterative field inverter, 50 iterations, its default
  tolerances, no boundary condition), its field applied to the nodes (they are its own grid nodes: no interpolation);
* plain fixed-point iteration x <- y - u(x), 200 steps (what atlasreg did before issue 13).

Run: ``python benchmarks/bench_inverse.py`` (writes benchmarks/results/inverse.json and inverse.md).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numpy as np

HERE = Path(__file__).resolve().parent


def field(a: float, n: int = 64):
    from atlasreg.transforms import DisplacementField

    u = np.zeros((n, n, n, 3))
    x = np.arange(n, dtype=float)
    u[..., 0] = (a * 8.0 * np.tanh((x - 32.0) / 8.0))[:, None, None]
    return DisplacementField(u, src="a", dst="b", outside="nan")


def main() -> None:
    import SimpleITK as sitk

    rows = []
    for a in (-0.8, 0.5, 1.5, 4.0):
        F = field(a)
        nodes = F.grid_points()
        F.inverse().map_points(nodes[:10])  # compile / load the kernels
        # atlasreg
        inv = F.inverse()
        t0 = time.perf_counter()
        xa = inv.map_points(nodes)
        ta = time.perf_counter() - t0
        rep = inv.last_report
        # SimpleITK
        img = sitk.GetImageFromArray(np.ascontiguousarray(F.displacement.transpose(2, 1, 0, 3)), isVector=True)
        t0 = time.perf_counter()
        vimg = sitk.InvertDisplacementField(img, maximumNumberOfIterations=50, enforceBoundaryCondition=False)
        ts = time.perf_counter() - t0
        v = sitk.GetArrayFromImage(vimg).transpose(2, 1, 0, 3).reshape(-1, 3)
        xs = nodes + v
        # fixed point (atlasreg before issue 13)
        t0 = time.perf_counter()
        xf = nodes.copy()
        for _ in range(200):
            fx = F.map_points(xf)
            xf = np.where(np.isfinite(fx), nodes - (fx - xf), np.nan)
        tf = time.perf_counter() - t0
        # preimage on the grid: the 1-D profile is monotone, so solve it densely to know which nodes have one
        xs_dense = np.linspace(-0.5, 63.5, 200001)
        ys_dense = xs_dense + a * 8.0 * np.tanh((np.clip(xs_dense, 0, 63) - 32.0) / 8.0)
        has_preimage = (nodes[:, 0] >= ys_dense.min()) & (nodes[:, 0] <= ys_dense.max())
        # scored on the interior (x in [12, 52]), where the stretch is: ITK's inverter is not meant for the
        # grid's edge, where the inverse of a field this large needs values from beyond the grid
        has_preimage &= (nodes[:, 0] >= 12) & (nodes[:, 0] <= 52)

        def stats(x):
            r = np.linalg.norm(F.map_points(x) - nodes, axis=1)[has_preimage]
            bad = ~np.isfinite(r)
            rr = r[~bad]
            return {"max": float(rr.max()) if rr.size else None, "p99": float(np.percentile(rr, 99)) if rr.size else None,
                    "nan": int(bad.sum()), "over_0.01_voxel": int((rr > 0.01).sum())}

        rows.append({"a": a, "det_j_centre": 1 + a, "nodes_with_preimage": int(has_preimage.sum()),
                     "atlasreg": dict(stats(xa), seconds=ta, failed=rep.failed, outside=rep.outside),
                     "simpleitk": dict(stats(xs), seconds=ts),
                     "fixed_point": dict(stats(xf), seconds=tf)})
        print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    out = {"rows": rows, "load_average": load, "threads": 2}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "inverse.json").write_text(json.dumps(out, indent=1))
    lines = ["# Inverting u_x = a·8·tanh((x−32)/8) on 64³ (nodes with 12 ≤ x ≤ 52; residual |F(x) − y| in voxels)", "",
             f"2 threads each; load average {load:.1f}.", "",
             "| det J at centre | atlasreg max residual (NaN) / s | SimpleITK InvertDisplacementField max (> 0.01 vox) / s "
             "| fixed point, 200 steps: max (NaN) / s |", "|---|---|---|---|"]
    for r in rows:
        A, S, P = r["atlasreg"], r["simpleitk"], r["fixed_point"]
        lines.append(f"| {r['det_j_centre']:.1f} | {A['max']:.1e} ({A['nan']}) / {A['seconds']:.2f} | "
                     f"{S['max']:.2g} ({S['over_0.01_voxel']}) / {S['seconds']:.2f} | "
                     f"{(P['max'] if P['max'] is not None else float('nan')):.2g} ({P['nan']}) / {P['seconds']:.2f} |")
    (HERE / "results" / "inverse.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
