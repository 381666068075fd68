"""atlasreg.tracings: SWC / MouseLight / table formats, the Neuron data model, strict input checks."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from atlasreg import InputError, OutputExistsError, Space
from atlasreg.tracings import (Neuron, NeuronList, PointTable, attach_synapses, read_mouselight, read_swc,
                               read_table, write_mouselight, write_swc, write_table)


@pytest.fixture(scope="module")
def fmost_files(data_dir):
    files = sorted((data_dir / "neurons" / "fmost_ccf25").glob("*.swc"))
    assert len(files) == 16
    return files


@pytest.fixture(scope="module")
def fmost(fmost_files):
    return NeuronList(read_swc(f, space="ccf", unit="um", voxel_size=25.0, orientation="asr", kind="optical")
                      for f in fmost_files)


def _raw_swc(path):
    return np.loadtxt(path, comments="#")


# -- declared space and units -------------------------------------------------------------------
def test_fmost_loads_in_declared_space_voxels_to_um(fmost, fmost_files):
    for n, f in zip(fmost, fmost_files):
        raw = _raw_swc(f)
        assert n.space == Space("ccf", "um", "asr")
        assert n.name == f.stem
        assert n.n_nodes == len(raw)
        # 25 µm voxel units -> µm, axis order kept (x = AP, y = DV, z = LR)
        np.testing.assert_allclose(n.points, raw[:, 2:5] * 25.0, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(n.nodes["id"].to_numpy(), raw[:, 0].astype(int))
        np.testing.assert_array_equal(n.nodes["parent"].to_numpy(), raw[:, 6].astype(int))
        assert n.provenance["source_space"] == "ccf" and n.provenance["voxel_size"] == [25.0] * 3
        # inside the 25 µm CCF grid (528 AP x 320 DV x 456 LR voxels)
        assert np.all(n.points >= 0) and np.all(n.points.max(0) < np.array([528, 320, 456]) * 25.0)
    # fMOST axons are long: whole-brain projection neurons have cm of cable
    assert min(n.cable_length for n in fmost) > 5_000.0


def test_cable_length_matches_direct_computation(fmost_files):
    raw = _raw_swc(fmost_files[0])
    n = read_swc(fmost_files[0], space="ccf", unit="um", voxel_size=25.0)
    xyz = raw[:, 2:5] * 25.0
    pos = {int(i): k for k, i in enumerate(raw[:, 0])}
    expect = sum(np.linalg.norm(xyz[k] - xyz[pos[int(p)]]) for k, p in enumerate(raw[:, 6]) if p >= 0)
    assert n.cable_length == pytest.approx(expect, rel=1e-12)


def test_anisotropic_voxel_size_and_sidecar(tmp_path, fmost_files):
    n = read_swc(fmost_files[1], space="lm", unit="um", voxel_size=(2.0, 3.0, 4.0))
    raw = _raw_swc(fmost_files[1])
    np.testing.assert_allclose(n.points, raw[:, 2:5] * [2, 3, 4])
    np.testing.assert_allclose(n.radius, raw[:, 5] * 24 ** (1 / 3))
    # a hand-written sidecar gives space/unit/voxel size
    p = tmp_path / "cell.swc"
    p.write_text(fmost_files[1].read_text())
    (tmp_path / "cell.swc.json").write_text(json.dumps({"space": "lm", "unit": "um", "voxel_size": [2, 3, 4]}))
    m = read_swc(p)
    np.testing.assert_array_equal(m.points, n.points)
    assert m.space == Space("lm", "um")
    with pytest.raises(InputError, match="sidecar"):
        read_swc(p, space="ccf")


def test_missing_space_or_unit_is_a_clear_error(fmost_files):
    with pytest.raises(InputError, match="space=.*unit=") as e:
        read_swc(fmost_files[0])
    assert fmost_files[0].name in str(e.value)
    with pytest.raises(InputError, match="unit"):
        read_swc(fmost_files[0], space="my_sample")  # an unknown space never gets a guessed unit
    # "ccf" is a known space (Allen CCFv3, um, asr): DESIGN's read_swc(path, space="ccf", voxel_size=25)
    n = read_swc(fmost_files[0], space="ccf", voxel_size=25.0)
    assert n.space == Space("ccf", "um", "asr")


def test_swc_write_read_roundtrip_is_exact(tmp_path, fmost):
    n = fmost[3]
    p = write_swc(n, tmp_path / "x" / "n.swc")
    m = read_swc(p)  # space, unit, name, provenance from the sidecar
    assert m == n
    assert m.space == Space("ccf", "um", "asr") and m.provenance == n.provenance
    with pytest.raises(OutputExistsError):
        write_swc(n, p)
    write_swc(n, p, force=True)


def test_dataframe_roundtrip(fmost):
    n = fmost[0]
    df = n.to_dataframe()
    assert list(df.columns)[:7] == ["id", "type", "x", "y", "z", "radius", "parent"]
    assert df.attrs == {"space": "ccf", "unit": "um", "orientation": "asr", "name": n.name,
                        "provenance": n.provenance}
    m = Neuron.from_dataframe(df)
    assert m == n
    # extra columns ride along; radius/type default
    df2 = df[["id", "parent", "x", "y", "z"]].assign(label="a")
    k = Neuron.from_dataframe(df2, space="ccf", unit="um")
    assert (k.nodes["type"] == 0).all() and (k.radius == 1.0).all() and (k.nodes["label"] == "a").all()
    assert k.cable_length == pytest.approx(n.cable_length)


def test_neuronlist_behaviour(fmost):
    assert len(fmost) == 16 and fmost[fmost.names[2]] is fmost[2]
    s = fmost.summary()
    assert list(s["n_nodes"]) == [n.n_nodes for n in fmost] and (s["kind"] == "optical").all()
    tbl = fmost[:2].nodes_table()
    assert len(tbl) == fmost[0].n_nodes + fmost[1].n_nodes and list(tbl["neuron"].cat.categories) == fmost.names[:2]
    with pytest.raises(InputError, match="duplicate neuron name"):
        NeuronList([fmost[0], fmost[0]])


# -- strict SWC validation: the error names the file and the line ------------------------------
GOOD = """# a comment
1 1 0 0 0 1 -1
2 3 1 0 0 1 1

3 3 2 0 0 1 2
4 3 3 0 0 1 3
"""


@pytest.mark.parametrize("text, line, what", [
    (GOOD.replace("3 3 2 0 0 1 2", "3 3 2 0 0 1 9"), 5, "parent 9"),                       # missing parent
    (GOOD.replace("4 3 3 0 0 1 3", "2 3 3 0 0 1 3"), 6, "duplicate node id 2"),            # duplicate id
    (GOOD.replace("1 1 0 0 0 1 -1", "1 1 0 0 0 1 4"), None, "cycle"),                      # cycle 1->4->3->2->1
    (GOOD.replace("3 3 2 0 0 1 2", "3 3 2 abc 0 1 2"), 5, "'y' = 'abc'"),                   # non-numeric
    (GOOD.replace("2 3 1 0 0 1 1", "2 3 1 0 0 1.5 1.5"), 3, "parent"),                       # non-integer parent
    (GOOD.replace("4 3 3 0 0 1 3", "4 3 3 0 0 3"), 6, "expected 7 fields"),                  # short line
    (GOOD.replace("4 3 3 0 0 1 3", "4 3 nan 0 0 1 3"), 6, "finite"),                         # NaN coordinate
    (GOOD.replace("2 3 1 0 0 1 1", "2 3 1 0 0 1 2"), 3, "cycle"),                            # self-parent
])
def test_bad_swc_names_file_and_line(tmp_path, text, line, what):
    p = tmp_path / "bad.swc"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        read_swc(p, space="ccf", unit="um")
    msg = str(e.value)
    assert str(p) in msg and what in msg
    if line is not None:
        assert f"line {line}:" in msg
    else:
        assert "line " in msg


def test_cycle_error_names_a_line_on_the_cycle(tmp_path):
    # tree 1..3 fine, then a 3-cycle 10 -> 11 -> 12 -> 10 with a tail 13 -> 10
    p = tmp_path / "cyc.swc"
    p.write_text("1 1 0 0 0 1 -1\n2 3 1 0 0 1 1\n3 3 2 0 0 1 2\n10 3 0 1 0 1 12\n11 3 0 2 0 1 10\n"
                 "12 3 0 3 0 1 11\n13 3 0 4 0 1 10\n")
    with pytest.raises(InputError, match=r"line [456]: node 1[012] is part of a parent cycle"):
        read_swc(p, space="ccf", unit="um")


def test_good_swc_with_unordered_ids_and_forest(tmp_path):
    p = tmp_path / "ok.swc"
    p.write_text("# header\n5 1 0 0 0 2 -1\n9 3 3 4 0 1 5  # trailing comment\n7 3 0 0 1 1 -1\n8 3 0 0 3 1 7\n")
    n = read_swc(p, space="s", unit="mm")
    assert n.n_nodes == 4 and len(n.roots) == 2 and n.cable_length == pytest.approx(7.0)
    assert n.soma_row == 0 and n.space.unit == "mm"


def test_neuron_from_dataframe_validates_rows():
    df = pd.DataFrame({"id": [1, 2, 2], "parent": [-1, 1, 1], "x": [0., 1, 2], "y": 0., "z": 0.})
    with pytest.raises(InputError, match="row 2: duplicate node id 2"):
        Neuron(df, "ccf", "um")
    with pytest.raises(InputError, match="unit"):
        Neuron(df.iloc[:2], "ccf")


# -- point tables and synapses ------------------------------------------------------------------
@pytest.fixture(scope="module")
def hemibrain(data_dir):
    d = data_dir / "neurons" / "hemibrain_em"
    em = Space("hemibrain", "nm")
    out = []
    for f in sorted(d.glob("*.swc")):
        n = read_swc(f, space=em, voxel_size=8, kind="em")
        syn = read_table(d / "synapses" / f"{f.stem}.csv", space=em, voxel_size=8)
        out.append(attach_synapses(n, syn))
    return out


def test_hemibrain_skeletons_and_synapses_in_nm(hemibrain, data_dir):
    d = data_dir / "neurons" / "hemibrain_em"
    assert len(hemibrain) == 5
    for n in hemibrain:
        raw = pd.read_csv(d / "synapses" / f"{n.name}.csv")
        assert n.space == Space("hemibrain", "nm")
        assert len(n.synapses) == len(raw)
        np.testing.assert_array_equal(n.synapses[["x", "y", "z"]].to_numpy(), raw[["x", "y", "z"]].to_numpy() * 8.0)
        assert set(n.synapses["type"]) <= {"pre", "post"} and n.synapses["roi"].notna().mean() > 0.9
        # synapses sit near their node: within a few µm in a fly brain
        pos = np.searchsorted(n.nodes["id"].to_numpy(), n.synapses["node_id"].to_numpy())
        dist = np.linalg.norm(n.synapses[["x", "y", "z"]].to_numpy() - n.points[pos], axis=1)
        assert np.median(dist) < 1000.0
        # a DA1 projection neuron: millimetres of cable in nm
        assert 1e6 < n.cable_length < 1e7


def test_synapses_must_attach_to_existing_nodes(hemibrain):
    n = hemibrain[0]
    bad = n.synapses.copy()
    bad.loc[3, "node_id"] = 10 ** 9
    with pytest.raises(InputError, match="synapse row 3: node_id 1000000000 is not a node"):
        attach_synapses(n, bad)


def test_table_csv_parquet_roundtrip(tmp_path, hemibrain, data_dir):
    f = data_dir / "neurons" / "hemibrain_em" / "synapses" / "722817260.csv"
    with pytest.raises(InputError, match="space"):
        read_table(f)
    t = read_table(f, space="hemibrain", unit="nm", voxel_size=8)
    for ext in ("parquet", "csv"):
        p = write_table(t, tmp_path / f"syn.{ext}")
        u = read_table(p)
        assert u.space == t.space and u.provenance == t.provenance and len(u) == len(t)
        np.testing.assert_array_equal(u.points, t.points)
        if ext == "parquet":
            assert u.equals(t)
    df = t.to_dataframe()
    assert PointTable.from_dataframe(df).equals(t)
    with pytest.raises(InputError, match="coordinate column"):
        PointTable(df.drop(columns="z"), "hemibrain", "nm")


# -- MouseLight JSON ----------------------------------------------------------------------------
def test_mouselight_roundtrip(tmp_path, fmost):
    n = fmost[8]  # the smaller neurons (12-13k nodes) keep this quick
    # make a dendrite branch: relabel one soma-child subtree as type 3
    nodes = n.nodes.copy()
    kids = np.flatnonzero(nodes["parent"].to_numpy() == nodes["id"].iat[n.soma_row])
    nodes.loc[kids[0], "type"] = 3
    n2 = Neuron(nodes, n.space, name=n.name, provenance=n.provenance)
    p = write_mouselight([n2, fmost[15]], tmp_path / "ml.json")
    data = json.loads(p.read_text())
    e = data["neurons"][0]
    assert e["idString"] == n.name and e["axon"][0]["structureIdentifier"] == 1
    # the whole branch whose first node is a dendrite goes to "dendrite" (plus the soma)
    ids, par = nodes["id"].to_numpy(), nodes["parent"].to_numpy()
    below = {int(ids[kids[0]])}
    for i, q in zip(ids, par):  # parents precede children in these files
        if q in below:
            below.add(int(i))
    assert len(e["dendrite"]) == len(below) + 1 and e["dendrite"][1]["structureIdentifier"] == 3
    assert len(e["axon"]) + len(e["dendrite"]) - 1 == n.n_nodes
    back = read_mouselight(p)
    assert back.names == [n.name, fmost[15].name] and back[0].space == n.space
    for a, b in zip(back, [n2, fmost[15]]):
        assert a.n_nodes == b.n_nodes
        assert a.cable_length == pytest.approx(b.cable_length, rel=1e-12)
        np.testing.assert_array_equal(a.soma, b.soma)
        np.testing.assert_array_equal(np.sort(a.points, axis=0), np.sort(b.points, axis=0))
    again = read_mouselight(write_mouselight(back, tmp_path / "ml2.json"))
    for a, b in zip(again, back):
        pd.testing.assert_frame_equal(a.nodes, b.nodes)


def test_mouselight_janelia_style_file(tmp_path):
    entry = {"idString": "AA0001", "annotationSpace": {"version": 3, "description": "Annotation Space: CCFv3.0"},
             "soma": {"x": 1.0, "y": 2.0, "z": 3.0, "allenId": 385},
             "axon": [{"sampleNumber": 1, "structureIdentifier": 1, "x": 1.0, "y": 2.0, "z": 3.0, "radius": 1.0,
                       "parentNumber": -1, "allenId": 385},
                      {"sampleNumber": 2, "structureIdentifier": 2, "x": 4.0, "y": 6.0, "z": 3.0, "radius": 1.0,
                       "parentNumber": 1, "allenId": 385}],
             "dendrite": [{"sampleNumber": 1, "structureIdentifier": 1, "x": 1.0, "y": 2.0, "z": 3.0, "radius": 1.0,
                           "parentNumber": -1},
                          {"sampleNumber": 2, "structureIdentifier": 3, "x": 1.0, "y": 2.0, "z": 4.0, "radius": 1.0,
                           "parentNumber": 1}]}
    p = tmp_path / "AA0001.json"
    p.write_text(json.dumps({"neurons": [entry]}))
    n = read_mouselight(p)[0]
    assert n.space == Space("ccf", "um") and n.n_nodes == 3 and n.cable_length == pytest.approx(6.0)
    assert n.nodes["parent"].tolist() == [-1, 1, 1] and n.nodes["allen_id"].iat[0] == 385
    entry["axon"][1]["x"] = "oops"
    p.write_text(json.dumps({"neurons": [entry]}))
    with pytest.raises(InputError, match=r"axon\[1\].*x = 'oops'"):
        read_mouselight(p)


def test_voxel_coordinates_that_overflow_when_scaled_are_refused_naming_the_file(tmp_path):
    """Found by the reliability fuzz test: a finite voxel coordinate times the voxel size can overflow to inf."""
    from atlasreg.tracings import read_table

    p = tmp_path / "syn.csv"
    p.write_text("x,y,z,type\n0,0,2.247116418577895e+307,pre\n1,2,3,post\n")
    with pytest.raises(InputError, match="not a finite physical coordinate") as exc:
        read_table(p, space="hemibrain", unit="nm", voxel_size=8)
    assert "syn.csv" in str(exc.value)
    ok = read_table(p, space="hemibrain", unit="nm", voxel_size=1e-300)
    assert np.isfinite(ok.points).all()
