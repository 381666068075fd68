"""Neurons against the Allen CCF (real 25 µm annotation): soma regions, projection matrices, synapse counts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlasreg import Affine, Space, SpaceGraph, SpaceMismatchError
from atlasreg.tracings import (Neuron, NeuronList, PointTable, annotate_neuron, annotate_points, annotate_table,
                               attach_synapses, place_block, projection_matrix, read_swc, read_table,
                               rollup_matrix, segment_regions, soma_regions, synapse_counts, transform_neuron)

CCF = Space("ccf", "um", "asr")


@pytest.fixture(scope="module")
def atlas(ccf25_atlas):
    return ccf25_atlas


@pytest.fixture(scope="module")
def fmost(data_dir):
    return NeuronList(read_swc(f, space=CCF, voxel_size=25.0, kind="optical")
                      for f in sorted((data_dir / "neurons" / "fmost_ccf25").glob("*.swc")))


def test_somata_land_in_named_region(atlas, fmost):
    onto = atlas.ontology
    s = soma_regions(fmost, atlas)
    assert s["name"].tolist() == fmost.names
    grey_or_root = {onto.id_of("root"), onto.id_of("grey")}
    hits = []
    for name, rid in zip(s["name"], s["region_id"]):
        named = onto.id_of(name.split("_")[-1])  # file name: ..._<soma region acronym>.swc
        ok = rid > 0 and rid not in grey_or_root and (
            rid == named or bool(onto.is_descendant([rid], named)[0]) or rid == onto.parent_of(named))
        hits.append(ok)
    assert sum(hits) >= 8, list(zip(s["name"], s["acronym"], hits))
    # acronyms are those of the ids
    real = s["region_id"] > 0
    assert (s.loc[real, "acronym"].to_numpy() == onto.acronyms(s.loc[real, "region_id"].to_numpy())).all()


def test_hemisphere_follows_the_midline(atlas, fmost):
    s = soma_regions(fmost, atlas)
    mid = (atlas.shape[2] - 1) * 25.0 / 2  # LR axis of the asr CCF
    left_side = s["z"] < mid
    assert set(s["hemisphere"]) <= {1, 2}
    assert s.loc[left_side, "hemisphere"].nunique() == 1 and s.loc[~left_side, "hemisphere"].nunique() == 1
    assert s.loc[left_side, "hemisphere"].iat[0] != s.loc[~left_side, "hemisphere"].iat[0]


@pytest.mark.parametrize("kw", [{}, {"method": "split"}, {"level": 5}, {"parents": ["Isocortex", "TH", "STR"]},
                                {"hemisphere": True, "level": 3}])
def test_projection_matrix_rows_sum_to_cable_length(atlas, fmost, kw):
    M = projection_matrix(fmost, atlas, **kw)
    assert list(M.index) == fmost.names
    total = np.array([n.cable_length for n in fmost])
    np.testing.assert_allclose(M.sum(axis=1).to_numpy(), total, rtol=1e-12)
    assert (M.to_numpy() >= 0).all()


def test_projection_matrix_rollup_and_content(atlas, fmost):
    onto = atlas.ontology
    fine = projection_matrix(fmost, atlas, labels="id")
    for level in (3, 5):
        coarse = projection_matrix(fmost, atlas, level=level, labels="id")
        rolled = rollup_matrix(fine, atlas, level=level)
        pd.testing.assert_frame_equal(rolled.reindex(columns=coarse.columns), coarse, check_names=False,
                                      check_exact=False, rtol=1e-12)
        assert all(c <= 0 or onto.depths([c])[0] <= level for c in coarse.columns)
    # a thalamic neuron keeps cable in the thalamus; most cable of every neuron lies in the brain
    # (a few fMOST axons leave the 2017 annotation rostro-ventrally: real registration error)
    th = projection_matrix(fmost, atlas, parents=["TH"])
    assert th.loc["18455_00152_VPL", "TH"] > 0.05 * fmost["18455_00152_VPL"].cable_length
    brain = projection_matrix(fmost, atlas, level=0)
    inside = brain["root"] / brain.sum(axis=1)
    assert (inside > 0.5).all() and inside.median() > 0.95


def test_projection_matrix_known_answer(atlas):
    """Tiny segments placed at known voxels: their lengths land in exactly those voxels' structures."""
    ann = atlas.annotation.data
    voxels = [(300, 150, 200), (264, 100, 300), (200, 200, 150)]
    ids = [int(np.asarray(ann[v])) for v in voxels]
    assert all(i > 0 for i in ids)
    rows, k = [], 1
    lengths = [0.5, 1.25, 2.0]
    for v, L in zip(voxels, lengths):
        c = np.array(v, float) * 25.0
        rows += [dict(id=k, parent=-1, x=c[0] - L / 2, y=c[1], z=c[2]), dict(id=k + 1, parent=k, x=c[0] + L / 2,
                                                                          y=c[1], z=c[2])]
        k += 2
    n = Neuron(pd.DataFrame(rows), CCF, name="probe")
    M = projection_matrix(n, atlas, labels="id")
    expect = pd.Series(lengths, index=ids).groupby(level=0).sum()
    np.testing.assert_allclose(M.loc["probe", expect.index].to_numpy(), expect.to_numpy(), rtol=1e-12)
    owner, piece, region, hemi = segment_regions(n, atlas, method="split", max_step=0.1)
    assert len(piece) == 5 + 13 + 20 and set(region) == set(ids)


def test_annotate_neuron_and_tables(atlas, fmost, data_dir):
    n = annotate_neuron(fmost[6], atlas, level=4)
    for c in ("region_id", "acronym", "hemisphere", "rollup_id", "rollup_acronym"):
        assert c in n.nodes.columns
    assert n.nodes["region_id"].iat[n.soma_row] == soma_regions(fmost[6], atlas)["region_id"].iat[0]
    # annotations describe positions: moving the neuron drops them rather than keep stale regions
    moved = transform_neuron(n, Affine.from_translation([100.0, 0, 0], src=CCF, dst=Space("shifted", "um")))
    assert "region_id" not in moved.nodes.columns and "acronym" not in moved.nodes.columns
    cells = pd.DataFrame({"cell": ["a", "b", "c"], "x": [5000.0, 6774.15, -100.0], "y": [4000.0, 4000.0, 0.0],
                          "z": [5700.0, 5700.0, 0.0]})
    out = annotate_table(cells, atlas, space="ccf")
    assert out["region_id"].iat[2] == -1 and out["acronym"].iat[2] == "(outside)"
    assert out["acronym"].iat[0] == annotate_points(cells[["x", "y", "z"]].to_numpy()[:1], atlas)["acronym"].iat[0]
    # a table in another space, linked to the atlas by a graph
    g = SpaceGraph([Affine.from_translation([-1000.0, 0, 0], src=Space("sample", "um"), dst=CCF)])
    shifted = cells.assign(x=cells.x + 1000.0)
    via = annotate_table(shifted, atlas, space="sample", graph=g, level=3)
    assert via["region_id"].tolist() == out["region_id"].tolist() and "rollup_acronym" in via.columns
    t = PointTable(cells, CCF)
    assert annotate_table(t, atlas)["region_id"].tolist() == out["region_id"].tolist()
    # mm tables are rescaled by the atlas lookup, not mislabelled
    mm = annotate_table(cells.assign(x=cells.x / 1000, y=cells.y / 1000, z=cells.z / 1000), atlas,
                        space=Space("ccf", "mm"))
    assert mm["region_id"].tolist() == out["region_id"].tolist()
    with pytest.raises(SpaceMismatchError):
        projection_matrix(read_swc(data_dir / "neurons" / "hemibrain_em" / "722817260.swc", space="hemibrain",
                                   unit="nm"), atlas)


def test_synapse_counts_of_a_synthetic_em_block(atlas, data_dir):
    """Fly EM skeletons placed as a synthetic block in the mouse CCF (no real registration exists)."""
    d = data_dir / "neurons" / "hemibrain_em"
    em = Space("hemibrain", "nm")
    ns = [attach_synapses(read_swc(d / f"{k}.swc", space=em, voxel_size=8),
                          read_table(d / "synapses" / f"{k}.csv", space=em, voxel_size=8))
          for k in ("722817260", "754534424")]
    lo = np.min([n.bounds()[0] for n in ns], 0)
    hi = np.max([n.bounds()[1] for n in ns], 0)
    T = place_block(em, lo, hi, [5500.0, 4000.0, 4000.0], CCF)
    moved = [transform_neuron(n, T) for n in ns]
    S = synapse_counts(moved, atlas)
    assert S.index.names == ["neuron", "type"]
    for n in ns:
        per_type = n.synapses["type"].value_counts()
        for t, c in per_type.items():
            assert S.loc[(n.name, t)].sum() == c
    P = synapse_counts(moved, atlas, by=None, level=3)
    assert P.sum(axis=1).tolist() == [len(n.synapses) for n in ns]
