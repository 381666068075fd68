"""Tracing files other tools wrote: MouseLight's legacy export (AA1506), MorphIO's odd SWC files, BigWarp landmarks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from atlasreg import Atlas, InputError, Space
from atlasreg.tracings import read_mouselight

CCF = Space("ccf", "um", "asr")


@pytest.fixture(scope="module")
def atlas(data_dir):
    d = data_dir / "atlas"
    return Atlas.load(annotation=d / "ABA_25um_2017_annotation.tif", ontology=d / "allen_structure_tree.csv",
                      voxel_size=25, file_orientation="ras", orientation="asr", space="ccf")


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
