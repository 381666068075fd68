"""match_landmarks / `atlasreg landmarks match`: unpaired soma clouds matched without pairs or a starting guess.

The real MICrONS soma files are matched once through the CLI (module fixture); recall, precision and error are
measured on the 150 validation pairs, which nothing here fits to.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import atlasreg as ar
from atlasreg.cli import app
from atlasreg.errors import InputError, NoMatchError
from atlasreg.io.landmarks import read_landmarks, read_points
from atlasreg.registration.matching import match_landmarks, signed_permutations


def _somata(data_dir):
    d = data_dir / "em_lm" / "microns_somata"
    em = pd.read_csv(d / "em_somata_nm.csv").to_numpy(float)
    lm = pd.read_csv(d / "lm_somata_um.csv").to_numpy(float)
    val = pd.read_csv(d / "validation_pairs.csv").to_numpy(int)
    return d, em, lm, val


def recall_precision(pairs, val):
    """Recall of the validation pairs; precision over found pairs that involve a validation row on either side."""
    found = {tuple(p) for p in np.asarray(pairs).tolist()}
    vset = {tuple(v) for v in val.tolist()}
    recall = len(found & vset) / len(vset)
    s_rows, d_rows = set(val[:, 0].tolist()), set(val[:, 1].tolist())
    involved = [p for p in found if p[0] in s_rows or p[1] in d_rows]
    precision = sum(p in vset for p in involved) / max(len(involved), 1)
    return recall, precision


@pytest.fixture(scope="module")
def cli_run(data_dir, tmp_path_factory):
    d, em, lm, val = _somata(data_dir)
    out = tmp_path_factory.mktemp("match") / "em_to_lm.json"
    r = CliRunner().invoke(app, ["landmarks", "match", str(d / "em_somata_nm.csv"), str(d / "lm_somata_um.csv"),
                                 "--src-unit", "nm", "--dst-unit", "um", "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out, r, em, lm, val


def test_real_somata_recall_precision_error(cli_run):
    out, r, em, lm, val = cli_run
    rep = json.loads(out.with_name("em_to_lm.report.json").read_text())
    pairs = np.asarray(rep["pairs"], int)
    recall, precision = recall_precision(pairs, val)
    assert recall >= 0.90 and precision >= 0.95, (recall, precision)
    # The transform file maps EM nm -> LM um; its error on the validation pairs.
    T = ar.load_transform(out)
    assert (T.src.unit, T.dst.unit) == ("nm", "um")
    err = np.linalg.norm(T.map_points(em[val[:, 0]]) - lm[val[:, 1]], axis=1)
    assert np.median(err) <= 3.9
    # A fit on the found pairs that never sees a validation row: a truly held-out error on them.
    keep = ~(np.isin(pairs[:, 0], val[:, 0]) | np.isin(pairs[:, 1], val[:, 1]))
    T2 = ar.fit_landmarks(em[pairs[keep, 0]], lm[pairs[keep, 1]], src=ar.Space("em", "nm"),
                          dst=ar.Space("lm", "um"))
    held = np.linalg.norm(T2.map_points(em[val[:, 0]]) - lm[val[:, 1]], axis=1)
    assert np.median(held) <= 3.9, np.median(held)
    # the report says which rotations were tried, and the held-out error of the final fit
    assert "mirrored" in rep["rotations_tried"] and rep["consistent"] is True
    assert 0 < rep["heldout_median"] <= 3.9
    assert len(rep["confidence"]) == len(pairs) and min(rep["confidence"]) >= 0 and max(rep["confidence"]) <= 1
    assert "held-out error median" in r.stdout


def test_cli_outputs_bigwarp_pairs_and_figure(cli_run):
    out, r, em, lm, val = cli_run
    rep = json.loads(out.with_name("em_to_lm.report.json").read_text())
    # the pairs file is a BigWarp CSV (8 quoted fields), read back by the BigWarp reader with the units stated
    pairs_csv = out.with_name("em_to_lm.pairs.csv")
    first = pairs_csv.read_text().splitlines()[0]
    assert first.count('","') == 7 and first.startswith('"')
    lp = read_landmarks(pairs_csv, format="bigwarp", src_unit="nm", dst_unit="um")
    p = np.asarray(rep["pairs"], int)
    np.testing.assert_allclose(lp.src_points, em[p[:, 0]])
    np.testing.assert_allclose(lp.dst_points, lm[p[:, 1]])
    png = out.with_name("em_to_lm.matches.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_result_is_a_graph_edge_and_a_refine_start(cli_run):
    out, r, em, lm, val = cli_run
    T = ar.load_transform(out)
    g = ar.SpaceGraph([T, ar.Affine.from_units(ar.Space("lm", "um"), ar.Space("lm_mm", "mm"))])
    mm = g.map_points(em[val[:20, 0]], "em", "lm_mm")
    np.testing.assert_allclose(mm * 1000, T.map_points(em[val[:20, 0]]), rtol=1e-12)
    back = g.map_points(lm[val[:5, 1]] / 1000, "lm_mm", "em")   # the numerical inverse of the spline
    assert np.all(np.isfinite(back))
    from atlasreg.em.crop import em_to_lm_mapper

    mapper = em_to_lm_mapper(T, ar.Space("em", "nm"), ar.Space("lm", "um"))  # what `em refine` builds first
    assert mapper.transform.src.name == "em"


def test_mirrored_and_rotated_copy_found(data_dir):
    """A mirror image of the light cloud under an oblique rotation, in another unit, with other rows dropped."""
    _, _, lm, _ = _somata(data_dir)
    rng = np.random.default_rng(3)
    from scipy.spatial.transform import Rotation

    R = Rotation.from_euler("zyx", [41, -28, 67], degrees=True).as_matrix() @ np.diag([1.0, 1.0, -1.0])
    a = rng.permutation(len(lm))
    src_rows, dst_rows = a[:450], a[150:600]   # 300 in both, 150 on each side without a partner
    src = ((lm[src_rows] - 700) @ R.T) * 1000 + 5e6          # nm, mirrored and rotated
    dst = lm[dst_rows] / 1000                               # mm
    res = match_landmarks(src, dst, src=ar.Space("copy", "nm"), dst=ar.Space("lm", "mm"))
    truth = {(i, j) for i, r in enumerate(src_rows) for j in [np.flatnonzero(dst_rows == r)] if j.size
             for j in [int(j[0])]}
    found = {tuple(p) for p in res.pairs.tolist()}
    assert len(found & truth) >= 0.95 * len(truth)
    assert len(found - truth) <= 0.02 * len(found)
    assert res.report["global"]["best"]["mirrored"] is True
    assert res.heldout_median * 1000 < 0.5                     # µm: a rigid copy is matched exactly
    assert res.transform.dst.unit == "mm"


def test_unrelated_clouds_refused(data_dir):
    _, em, lm, _ = _somata(data_dir)
    rng = np.random.default_rng(7)
    # same number of points, same box, same marginal distributions per axis: no correspondence
    shuffled = np.stack([rng.permutation(lm[:500, i]) for i in range(3)], 1)
    with pytest.raises(NoMatchError, match="not a consistent correspondence|pairs found") as ei:
        match_landmarks(em[:500], shuffled, src=ar.Space("em", "nm"), dst=ar.Space("lm", "um"))
    assert ei.value.result is not None and ei.value.result.report["consistent"] is False
    # refuse=False hands back the result, flagged
    res = match_landmarks(em[:300], rng.uniform(lm.min(0), lm.max(0), (300, 3)), refuse=False)
    assert res.report["consistent"] is False and res.report["reason"]
    res = match_landmarks(em[:15], rng.uniform(lm.min(0), lm.max(0), (15, 3)), refuse=False)
    assert res.report["consistent"] is False and res.summary()


def test_bad_input(tmp_path):
    pts = np.random.default_rng(0).uniform(0, 500, (50, 3))
    with pytest.raises(InputError, match="unit"):
        match_landmarks(pts * 1000, pts, src="em", dst=ar.Space("lm", "um"))
    with pytest.raises(InputError, match="too few"):
        match_landmarks(pts[:5] * 1000, pts)
    bad = pts.copy()
    bad[7, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        match_landmarks(pts * 1000, bad)
    with pytest.raises(InputError, match="coplanar"):
        match_landmarks(pts * 1000, np.c_[pts[:, :2], np.zeros(50)])
    # files without a unit: the CLI refuses before computing, naming the file
    f = tmp_path / "cells.csv"
    pd.DataFrame(pts, columns=["x", "y", "z"]).to_csv(f, index=False)
    with pytest.raises(InputError, match="unit"):
        read_points(f)
    g = tmp_path / "cells_nm.csv"
    pd.DataFrame(pts * 1000, columns=["x_nm", "y_nm", "z_nm"]).to_csv(g, index=False)
    with pytest.raises(InputError, match="column names say"):
        read_points(g, unit="um")
    r = CliRunner().invoke(app, ["landmarks", "match", str(g), str(f), "-o", str(tmp_path / "o.json")])
    assert r.exit_code == 2 and "cells.csv" in r.output and "unit" in r.output, r.output
    assert "=" not in r.output.split("unit", 1)[1]            # CLI speaks in options, not Python arguments
    assert not (tmp_path / "o.json").exists()


def test_signed_permutations_are_the_cube_group():
    P = signed_permutations()
    assert len({p.tobytes() for p in P}) == 48
    assert np.allclose(np.abs(P).sum(1), 1) and np.allclose(np.einsum("kij,kil->kjl", P, P), np.eye(3))


def _bench():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_matching

    return bench_matching


@pytest.mark.slow
def test_large_synthetic_block():
    """2 × 100,000 synthetic somata (an H01-sized table; the benchmark's generator: ~24 µm spacing, layered
    densities, an axis swap, an anisotropic scale and a smooth warp that leaves ~18 µm to an affine, 20 % dropped on
    each side), no prior: nearly every true pair is found, and the transform is good to a tenth of the spacing."""
    em, lm, truth = _bench().synthetic_case(125_000, 100_000, seed=4)
    res = match_landmarks(em, lm, seed=4)
    found = {tuple(p) for p in res.pairs.tolist()}
    tset = {tuple(p) for p in truth.tolist()}
    assert len(found & tset) >= 0.95 * len(tset) and len(found & tset) >= 0.98 * len(found)
    err = np.linalg.norm(res.transform.map_points(em[truth[:, 0]]) - lm[truth[:, 1]], axis=1)
    assert np.median(err) < 0.15 * res.report["spacing_um"]
    assert res.report["global"]["seeded"]


@pytest.mark.slow
def test_large_block_from_a_rough_prior():
    """2 × 20,000 somata from a prior transform that is 6° and 60 µm off (several cell spacings at the block's
    edges, out of reach of a cell-level CPD): the seeded sub-blocks take it from there."""
    from scipy.spatial.transform import Rotation

    em, lm, truth = _bench().synthetic_case(25_000, 20_000, seed=5)
    S, D = em[truth[:, 0]] / 1000.0, lm[truth[:, 1]]
    M = np.linalg.lstsq(np.c_[S, np.ones(len(S))], D, rcond=None)[0].T     # (3, 4): the best affine, um -> um
    rough = np.eye(4)
    rough[:3, :3] = Rotation.from_rotvec(np.radians(6.0) * np.array([0.6, 0.0, 0.8])).as_matrix() @ M[:, :3] / 1000
    rough[:3, 3] = M[:, 3] + np.array([60.0, 0.0, 0.0])
    prior = ar.Affine(rough, ar.Space("em", "nm"), ar.Space("lm", "um"))
    res = match_landmarks(em, lm, prior=prior, seed=5)
    found = {tuple(p) for p in res.pairs.tolist()}
    tset = {tuple(p) for p in truth.tolist()}
    assert len(found & tset) >= 0.95 * len(tset) and len(found & tset) >= 0.98 * len(found)
    assert res.report["global"]["from_prior"] == "transform" and res.report["global"]["candidates"][0]["seeds"]["locked"]


@pytest.mark.slow
def test_large_unrelated_clouds_refused():
    """2 × 20,000 somata whose light side has each axis shuffled independently: no sub-block locks in under any
    rotation, so it is refused before the non-rigid stage."""
    em, lm, _ = _bench().synthetic_case(25_000, 20_000, seed=6)
    rng = np.random.default_rng(6)
    shuffled = np.stack([rng.permutation(lm[:, i]) for i in range(3)], 1)
    with pytest.raises(NoMatchError, match="no sub-block"):
        match_landmarks(em, shuffled, seed=6)


def test_prior_transform_and_bounds(data_dir):
    """An approximate transform as prior (no rotation search), and rotation bounds around a given rotation."""
    _, _, lm, _ = _somata(data_dir)
    rng = np.random.default_rng(5)
    a = rng.permutation(len(lm))
    src_rows, dst_rows = a[:400], a[100:500]
    R = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    src = (lm[src_rows] @ R.T) * 1000 / 1.1                       # nm; dst = (src / 1000 * 1.1) @ R
    truth = {(i, int(np.flatnonzero(dst_rows == r)[0])) for i, r in enumerate(src_rows) if r in dst_rows}
    rough = np.eye(4)
    rough[:3, :3] = R.T * 1.1e-3 * 1.05                           # 5 % off in scale, 20 µm off in translation
    rough[:3, 3] = 20.0
    prior = ar.Affine(rough, ar.Space("em", "nm"), ar.Space("lm", "um"))
    res = match_landmarks(src, lm[dst_rows], prior=prior)
    assert res.report["rotations_tried"].startswith("none")
    found = {tuple(p) for p in res.pairs.tolist()}
    assert len(found & truth) >= 0.95 * len(truth) and len(found - truth) <= 0.02 * len(found)
    res = match_landmarks(src, lm[dst_rows], prior={"rotation_deg": 15, "rotation": R.T})
    assert "within the prior's bounds" in res.report["rotations_tried"]
    assert len({tuple(p) for p in res.pairs.tolist()} & truth) >= 0.95 * len(truth)
    with pytest.raises(InputError, match="prior"):
        match_landmarks(src, lm[dst_rows], prior={"angle": 3})
