"""Tracing files other tools wrote: MouseLight's legacy export (AA1506), MorphIO's odd SWC files, BigWarp landmarks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from atlasreg import InputError, Space
from atlasreg.tracings import read_mouselight

CCF = Space("ccf", "um", "asr")


@pytest.fixture(scope="module")
def atlas(ccf25_atlas):
    return ccf25_atlas


def _own_region_share(atlas, regions, allen_ids) -> float:
    """Share of nodes whose region is their own allenId, or its ancestor or descendant."""
    onto = atlas.ontology
    pairs = np.stack([np.asarray(regions, np.int64), np.asarray(allen_ids, np.int64)], axis=1)
    uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
    good = np.array([r > 0 and a > 0 and (r == a or bool(onto.is_descendant([r], a)[0])
                                          or bool(onto.is_descendant([a], r)[0])) for r, a in uniq.tolist()])
    return float(good[inv.ravel()].mean())


def test_mouselight_legacy_axes_follow_the_header(data_dir, atlas):
    """AA1506's header: ``Z: Anterior-Posterior; Y: Inferior-Superior; X: Left-Right``. Its nodes carry the
    authors' allenId: read as the header says, as many fall in their own region as a direct lookup finds."""
    path = data_dir / "interop" / "mouselight_legacy" / "AA1506.json"
    entry = json.loads(path.read_text())["neurons"][0]
    samples = entry["axon"] + entry["dendrite"][1:]  # the dendrite's copy of the soma is dropped on reading
    raw = np.array([[s["x"], s["y"], s["z"]] for s in samples])
    allen = np.array([s["allenId"] for s in samples])
    # Direct lookup of the header's axes (Z -> AP, Y -> DV, X -> LR) in the 25 µm annotation.
    direct = atlas.region_of(raw[:, [2, 1, 0]], space=CCF, on_invalid="ignore")
    want = _own_region_share(atlas, direct, allen)
    assert want > 0.5  # the oracle itself: the header's axes put most nodes in their own region

    n = read_mouselight(path)[0]
    assert n.space.name == "ccf" and n.space.unit == "um" and n.n_nodes == len(samples)
    assert n.provenance["source_axes"] == "zyx" and "ML legacy" in n.provenance["annotation_space"]
    np.testing.assert_allclose(n.points, raw[:, [2, 1, 0]])
    got = _own_region_share(atlas, atlas.region_of(n.points, space=CCF, on_invalid="ignore"), allen)
    assert got == pytest.approx(want, abs=1e-9)
    # The file's x, y, z taken as the CCF's axes (the old reading) put almost no node in its region.
    assert _own_region_share(atlas, atlas.region_of(raw, space=CCF, on_invalid="ignore"), allen) < 0.01
    # Stating the space does not switch the header's axes off.
    m = read_mouselight(path, space="ccf", unit="um")[0]
    np.testing.assert_allclose(m.points, n.points)


def test_mouselight_legacy_swc_follows_its_header_too(data_dir):
    """The same neuron exported as SWC carries the same header line: read alike, stated space or not."""
    from atlasreg.tracings import read_swc

    d = data_dir / "interop" / "mouselight_legacy"
    ref = read_mouselight(d / "AA1506.json")[0]
    for kw in ({}, {"space": "ccf", "unit": "um"}):
        n = read_swc(d / "AA1506.swc", **kw)
        assert n.space.name == "ccf" and n.space.unit == "um" and n.provenance["source_axes"] == "zyx"
        np.testing.assert_allclose(n.points, ref.points, rtol=0, atol=1e-6)  # the SWC prints 6 decimals


def _entry(annotation_space) -> dict:
    return {"idString": "X1", "annotationSpace": annotation_space,
            "axon": [{"sampleNumber": 1, "structureIdentifier": 1, "x": 1.0, "y": 2.0, "z": 3.0, "radius": 1.0,
                      "parentNumber": -1},
                     {"sampleNumber": 2, "structureIdentifier": 2, "x": 4.0, "y": 5.0, "z": 6.0, "radius": 1.0,
                      "parentNumber": 1}], "dendrite": []}


def test_mouselight_ccfv3_axes_and_unknown_spaces(tmp_path):
    p = tmp_path / "n.json"
    v3 = {"version": 3, "description": "Annotation Space: CCFv3.0 Axes> X: Anterior-Posterior; "
                                       "Y: Superior-Inferior; Z: Left-Right"}
    p.write_text(json.dumps({"neurons": [_entry(v3)]}))
    np.testing.assert_allclose(read_mouselight(p)[0].points, [[1, 2, 3], [4, 5, 6]])
    # The same neuron with its axes listed in another order is reordered into AP, DV, LR.
    odd = {"version": 3, "description": "Annotation Space: CCFv3.0 Axes> Y: Anterior-Posterior; "
                                        "Z: Superior-Inferior; X: Left-Right"}
    p.write_text(json.dumps({"neurons": [_entry(odd)]}))
    np.testing.assert_allclose(read_mouselight(p)[0].points, [[2, 3, 1], [5, 6, 4]])
    unknown = {"version": 1, "description": "Annotation Space: Waxholm rat v4"}
    p.write_text(json.dumps({"neurons": [_entry(unknown)]}))
    with pytest.raises(InputError, match="unknown MouseLight annotationSpace.*Waxholm rat v4") as exc:
        read_mouselight(p)
    assert "n.json" in str(exc.value)
    # Stating the space and unit reads the numbers as they are.
    np.testing.assert_allclose(read_mouselight(p, space="whs", unit="um")[0].points, [[1, 2, 3], [4, 5, 6]])
    broken = {"version": 2.5, "description": "CCFv2.5 (ML legacy) Axes> Z: Anterior-Posterior; Y: Left-Right; "
                                             "X: Left-Right"}
    p.write_text(json.dumps({"neurons": [_entry(broken)]}))
    with pytest.raises(InputError, match="cannot read axis X"):
        read_mouselight(p)


# ---------------------------------------------------------------------------------------------
# SWC: MorphIO's odd files with their roots marked by parent 0
# ---------------------------------------------------------------------------------------------
def _swc_rows(path):
    return [ln.split("#")[0].split() for ln in path.read_text().splitlines()
            if ln.split("#")[0].strip()]


@pytest.mark.parametrize("name", ["no_soma.swc", "disconnected_neurite.swc", "three_point_soma.swc",
                                  "simple-all-types.swc"])
def test_swc_parent_zero_roots_read_alike_in_any_order(data_dir, tmp_path, name):
    from atlasreg.tracings import read_swc

    ref = read_swc(data_dir / "interop" / "swc_morphio" / name, space="x", unit="um")
    rows = _swc_rows(data_dir / "interop" / "swc_morphio" / name)
    zero = [r[:6] + ["0" if int(r[6]) < 0 else r[6]] for r in rows]
    shuffled = [zero[i] for i in np.random.default_rng(5).permutation(len(zero))]
    for label, table in (("id order", zero), ("shuffled", shuffled)):
        p = tmp_path / f"{label.replace(' ', '_')}_{name}"
        p.write_text("".join(" ".join(r) + "\n" for r in table))
        n = read_swc(p, space="x", unit="um")
        order = np.argsort(n.nodes["id"].to_numpy())
        np.testing.assert_array_equal(n.nodes["parent"].to_numpy()[order], ref.nodes["parent"].to_numpy())
        np.testing.assert_array_equal(n.points[order], ref.points)
        assert len(n.roots) == len(ref.roots) >= 1, label
        np.testing.assert_array_equal(n.soma, ref.soma)
        assert n.provenance["root_parent"] == 0
    # With a node 0 in the file, parent 0 is that node, in any order.
    ids0 = [[str(int(r[0]) - 1), r[1], *r[2:6], str(int(r[6]) - 1) if int(r[6]) > 0 else "-1"] for r in rows]
    p = tmp_path / f"from0_{name}"
    p.write_text("".join(" ".join(r) + "\n" for r in ids0[::-1]))
    n = read_swc(p, space="x", unit="um")
    assert len(n.roots) == len(ref.roots) and "root_parent" not in n.provenance


def test_neuron_tables_with_parent_zero_roots_alike_in_any_order():
    import pandas as pd

    from atlasreg.tracings import Neuron

    df = pd.DataFrame({"id": [1, 2, 3, 4], "type": [2, 2, 2, 3], "parent": [0, 1, 2, 1],
                       "x": [0.0, 1, 2, 3], "y": 0.0, "z": 0.0})
    a = Neuron(df, "x", unit="um")
    b = Neuron(df.iloc[[2, 0, 3, 1]].reset_index(drop=True), "x", unit="um")
    for n in (a, b):
        assert n.nodes.loc[n.nodes["id"] == 1, "parent"].item() == -1 and len(n.roots) == 1
        np.testing.assert_array_equal(n.soma, [0.0, 0, 0])


def test_parent_rows_treats_a_missing_parent_zero_alike_in_any_order():
    from atlasreg.tracings.neuron import parent_rows

    ids = np.array([1, 2, 3, 4])
    parents = np.array([0, 1, 2, 1])
    np.testing.assert_array_equal(parent_rows(ids, parents), [-2, 0, 1, 0])
    perm = np.array([2, 0, 3, 1])
    got = parent_rows(ids[perm], parents[perm])
    np.testing.assert_array_equal(got, [3, -2, 1, 1])


# ---------------------------------------------------------------------------------------------
# BigWarp: its JSON settings and its 2-D CSVs
# ---------------------------------------------------------------------------------------------
def test_bigwarp_json_landmarks_equal_its_csv(data_dir):
    from atlasreg.io.landmarks import read_landmarks

    d = data_dir / "interop" / "bigwarp"
    js = read_landmarks(d / "settings_expected.json", src_unit="um", dst_unit="um", include_inactive=True)
    csv_pairs = read_landmarks(d / "landmarks.csv", src_unit="um", dst_unit="um", include_inactive=True)
    doc = (d / "settings_expected.json").read_text()
    lm = json.loads(doc[doc.index("*/") + 2:])["Transform"]["landmarks"]
    assert len(js) == len(lm["movingPoints"]) == 5
    np.testing.assert_array_equal(js.src_points, np.array(lm["movingPoints"]))
    np.testing.assert_array_equal(js.dst_points, np.array(lm["fixedPoints"]))
    assert js.names == lm["names"] and js.active.tolist() == lm["active"]
    assert (js.src.name, js.dst.name) == ("moving", "fixed")
    # BigWarp's CSV export of the same session: the same points, names in the same order.
    n = min(len(js), len(csv_pairs))
    assert js.names[:n] == csv_pairs.names[:n]
    np.testing.assert_allclose(js.src_points[:n], csv_pairs.src_points[:n], rtol=0, atol=1e-9)
    np.testing.assert_allclose(js.dst_points[:n], csv_pairs.dst_points[:n], rtol=0, atol=1e-9)
    with pytest.raises(InputError, match="unit"):
        read_landmarks(d / "settings_expected.json")  # BigWarp records no unit


def test_bigwarp_2d_csv_is_refused_for_its_real_reason(data_dir, tmp_path):
    from atlasreg.io.landmarks import read_landmarks

    with pytest.raises(InputError, match="6 fields.*2-D images.*no z") as exc:
        read_landmarks(data_dir / "interop" / "bigwarp" / "landmarks2d-blobs.csv", src_unit="um", dst_unit="um")
    assert "landmarks2d-blobs.csv" in str(exc.value) and "column" not in str(exc.value)
    doc = {"type": "BigWarpLandmarks", "numDimensions": 2, "movingPoints": [[1.0, 2.0]], "fixedPoints": [[3.0, 4.0]],
           "active": [True], "names": ["Pt-0"]}
    (tmp_path / "lm2d.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="2-D images"):
        read_landmarks(tmp_path / "lm2d.json", src_unit="um", dst_unit="um")
