"""Ontology: Allen CSV and nested JSON, lookups, hierarchy, level/rollup mapping, bad input."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from atlasreg import InputError, Ontology


@pytest.fixture(scope="module")
def onto(data_dir):
    return Ontology.read(data_dir / "atlas" / "allen_structure_tree.csv")


def test_csv_and_json_agree(data_dir, onto):
    oj = Ontology.read(data_dir / "atlas" / "allen_ontology.json")
    assert len(onto) == len(oj) == 1327  # 1,328 rows minus Allen's id-0 'void' row
    assert np.array_equal(onto.ids, oj.ids)
    assert np.array_equal(onto.parent, oj.parent)
    assert all(onto[int(i)].acronym == oj[int(i)].acronym for i in onto.ids[::37])


def test_ancestors_match_structure_paths(data_dir, onto):
    raw = pd.read_csv(data_dir / "atlas" / "allen_structure_tree.csv")
    raw = raw[raw["id"] > 0]
    for sid, path in zip(raw["id"], raw["structure_id_path"]):
        ids = [int(v) for v in path.strip("/").split("/")]
        assert onto.ancestors(int(sid), include_self=True) == ids
        assert onto.ancestors(int(sid)) == ids[:-1]
    assert onto.ancestors("VISp") == [997, 8, 567, 688, 695, 315, 669]


def test_descendants_and_children(onto):
    d = set(onto.descendants("VISp"))
    assert {onto.id_of(a) for a in ("VISp1", "VISp2/3", "VISp4", "VISp5", "VISp6a", "VISp6b")} == d
    assert set(onto.children("VISp")) == d
    # every descendant has VISp on its path; nothing else does
    for i in onto.ids:
        assert (int(i) in d) == (385 in onto.ancestors(int(i)))
    assert len(onto.descendants("root", include_self=True)) == len(onto)


def test_lookup_by_acronym_name_case(onto):
    assert onto.id_of("VISp") == 385
    assert onto.id_of("visp") == 385
    assert onto.id_of("Primary visual area") == 385
    assert onto["CA1"].name == "Field CA1"
    s = onto["VISp"]
    assert s["acronym"] == "VISp" and s["rgb_triplet"] == [8, 133, 140] and s.depth == 7


def test_unknown_acronym_suggests(onto):
    with pytest.raises(InputError) as e:
        onto.id_of("VISpp")
    assert "VISp" in str(e.value) and "did you mean" in str(e.value)
    with pytest.raises(InputError):
        onto.id_of(123456789)


def test_at_level_and_passthrough(onto):
    ids = onto.ids_of(["VISp4", "MOp5", "CA1", "root"])
    lvl5 = onto.at_level(np.r_[ids, 0, -1], 5)
    assert lvl5.tolist() == [315, 315, 1089, 997, 0, -1]  # Isocortex, Isocortex, HPF, root stays, 0/-1 pass
    assert onto.at_level(ids, 0).tolist() == [997] * 4
    with pytest.raises(InputError):
        onto.at_level(ids, -1)
    with pytest.raises(InputError):
        onto.at_level([385, 424242], 3)


def test_rollup_to_chosen_parents(onto):
    ids = onto.ids_of(["VISp4", "MOp5", "CA1", "VPM"])
    out = onto.rollup(np.r_[ids, 0, -1], ["Isocortex", "VIS", "HPF"])
    # deepest chosen parent wins (VIS under Isocortex); VPM is under none -> 0
    assert out.tolist() == [onto.id_of("VIS"), 315, 1089, 0, 0, -1]
    assert onto.rollup(ids, ["Isocortex"], other=-2).tolist() == [315, 315, -2, -2]


def test_json_brainglobe_flat_and_bad_tables(tmp_path):
    flat = [{"id": 1, "acronym": "A", "name": "a", "structure_id_path": [1], "rgb_triplet": [255, 0, 0]},
            {"id": 2, "acronym": "B", "name": "b", "structure_id_path": [1, 2], "rgb_triplet": [0, 255, 0]}]
    p = tmp_path / "structures.json"
    p.write_text(json.dumps(flat))
    o = Ontology.read(p)
    assert o.ancestors("B") == [1] and o["B"].colour == "00FF00"
    # inconsistent path vs parent
    bad = pd.DataFrame({"id": [1, 2], "acronym": ["A", "B"], "name": ["a", "b"], "parent": [None, 1],
                        "structure_id_path": ["/1/", "/3/2/"]})
    with pytest.raises(InputError, match="disagrees"):
        Ontology(bad)
    cyc = pd.DataFrame({"id": [1, 2], "acronym": ["A", "B"], "name": ["a", "b"], "parent": [2, 1]})
    with pytest.raises(InputError, match="cycle"):
        Ontology(cyc)
    with pytest.raises(InputError, match="not structures"):
        Ontology(pd.DataFrame({"id": [1], "acronym": ["A"], "name": ["a"], "parent": [7]}))
