"""Moving neurons through chains of spaces and combining EM with optical tracings in the CCF.

The hemibrain skeletons are *Drosophila* neurons. No registration links a fly brain to the
mouse CCF, so to combine them with the mouse fMOST neurons the tests place them as a
*synthetic EM block* in the CCF (`place_block`: nm -> µm, a rotation, block centre on a chosen
CCF point). The block's size and the EM data are real; its position in the mouse brain is made up.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlasreg import (Affine, DisplacementField, InputError, OutputExistsError, Space, SpaceGraph,
                      SpaceMismatchError, ThinPlateSpline)
from atlasreg.tracings import (EMBlock, Neuron, NeuronList, attach_synapses, block_from_neurons, combine,
                               find_passing, place_block, read_collection, read_swc, read_table,
                               transform_neuron, transform_table, write_collection)

EM = Space("hemibrain", "nm")
CCF = Space("ccf", "um", "asr")


@pytest.fixture(scope="module")
def hemibrain(data_dir):
    d = data_dir / "neurons" / "hemibrain_em"
    out = NeuronList()
    for f in sorted(d.glob("*.swc")):
        n = read_swc(f, space=EM, voxel_size=8, kind="em")
        out.append(attach_synapses(n, read_table(d / "synapses" / f"{f.stem}.csv", space=EM, voxel_size=8)))
    return out


@pytest.fixture(scope="module")
def fmost(data_dir):
    return NeuronList(read_swc(f, space=CCF, voxel_size=25.0, kind="optical")
                      for f in sorted((data_dir / "neurons" / "fmost_ccf25").glob("*.swc")))


@pytest.fixture(scope="module")
def em_bounds(hemibrain):
    b = block_from_neurons(hemibrain, Affine.from_units(EM, Space("em_um", "um")))
    return b.lo, b.hi


@pytest.fixture(scope="module")
def chain(em_bounds):
    """hemibrain [nm] -> em_um -> (thin-plate spline) -> lm -> (displacement field) -> lm_w -> ccf.

    The last step is the synthetic placement of the fly EM block in the mouse CCF.
    """
    lo, hi = em_bounds[0] / 1000, em_bounds[1] / 1000
    rng = np.random.default_rng(7)
    g = SpaceGraph()
    g.add(Affine.from_units(EM, Space("em_um", "um")))
    src = rng.uniform(lo - 20, hi + 20, (40, 3))
    dst = src * 1.05 + 3.0 * np.sin(src / 40.0)
    g.add(ThinPlateSpline(src, dst, src="em_um", dst="lm"))
    shape = (24, 24, 24)
    origin = lo * 1.05 - 60
    spacing = (hi - lo) * 1.05 / 23 + 120 / 23
    ii = np.indices(shape).transpose(1, 2, 3, 0).astype(float)
    u = np.stack([2.0 * np.sin(ii[..., 1] / 5), 1.5 * np.cos(ii[..., 2] / 6), np.sin(ii[..., 0] / 4)], -1)
    g.add(DisplacementField(u, spacing=spacing, origin=origin, src="lm", dst="lm_w"))
    c = (lo + hi) / 2 * 1.05
    g.add(place_block(Space("lm_w", "um"), c - 1, c + 1, [6000.0, 4000.0, 5700.0], CCF, rotation_deg=(0, 0, 15)))
    return g


def _node_pos(n: Neuron) -> np.ndarray:
    order = np.argsort(n.nodes["id"].to_numpy())
    return order[np.searchsorted(n.nodes["id"].to_numpy(), n.synapses["node_id"].to_numpy(), sorter=order)]


def test_hemibrain_roundtrip_through_tps_and_field_subnanometre(hemibrain, chain):
    T = chain.transform("hemibrain", "ccf")
    kinds = {type(s).__name__ for s in T.steps}
    assert {"ThinPlateSpline", "DisplacementField"} <= kinds
    for n in hemibrain:
        m = transform_neuron(n, chain, dst="ccf")
        assert m.space == CCF and m.n_nodes == n.n_nodes
        # topology kept, synapses still attached to the same nodes
        pd.testing.assert_frame_equal(m.nodes[["id", "type", "parent"]], n.nodes[["id", "type", "parent"]])
        np.testing.assert_array_equal(m.synapses["node_id"].to_numpy(), n.synapses["node_id"].to_numpy())
        assert m.synapses["connector_id"].equals(n.synapses["connector_id"])
        # the block lands where it was put: around (6000, 4000, 5700) µm, fly-sized (< 0.5 mm)
        assert np.all(np.abs(m.points - [6000, 4000, 5700]).max(0) < 300)
        # cable is ~5 % longer (spline scale 1.05) in µm
        assert m.cable_length == pytest.approx(n.cable_length * 1e-3 * 1.05, rel=0.05)
        # each synapse stays next to its node: distances scale with the map, no drift
        d0 = np.linalg.norm(n.synapses[["x", "y", "z"]].to_numpy() - n.points[_node_pos(n)], axis=1) * 1e-3
        d1 = np.linalg.norm(m.synapses[["x", "y", "z"]].to_numpy() - m.points[_node_pos(m)], axis=1)
        np.testing.assert_allclose(d1, d0 * 1.05, rtol=0.15, atol=0.02)
        # radii scale by the local |det J|^(1/3) (~1.05e-3 here)
        np.testing.assert_allclose(m.radius / n.radius, 1.05e-3, rtol=0.15)
        back = transform_neuron(m, chain, dst="hemibrain")
        assert back.space == EM
        err = np.abs(back.points - n.points).max()
        syn_err = np.abs(back.synapses[["x", "y", "z"]].to_numpy() - n.synapses[["x", "y", "z"]].to_numpy()).max()
        assert err < 1.0 and syn_err < 1.0, (err, syn_err)  # nm
        np.testing.assert_allclose(back.radius, n.radius, rtol=1e-5)
        assert len(back.provenance["transforms"]) == 2 and back.provenance["source_space"] == "hemibrain"


def test_synapse_table_moves_alone(hemibrain, chain, data_dir):
    t = read_table(data_dir / "neurons" / "hemibrain_em" / "synapses" / "722817260.csv", space=EM, voxel_size=8)
    m = transform_table(t, chain, dst="ccf")
    n = hemibrain["722817260"]
    np.testing.assert_allclose(m.points, transform_neuron(n, chain, dst="ccf").synapses[["x", "y", "z"]], atol=1e-9)
    back = transform_table(m, chain, dst="hemibrain")
    assert np.abs(back.points - t.points).max() < 1.0


def test_radii_scale_with_local_volume_change(fmost):
    n = fmost[0]
    A = Affine.from_scale([1.0, 2.0, 4.0], src=CCF, dst="stretched")
    m = transform_neuron(n, A)
    np.testing.assert_allclose(m.radius, n.radius * 2.0)
    np.testing.assert_allclose(m.points, n.points * [1, 2, 4])
    assert transform_neuron(n, A, radii="keep").radius.tolist() == n.radius.tolist()


def test_transform_errors(fmost, hemibrain, chain):
    with pytest.raises(SpaceMismatchError, match="maps from"):
        transform_neuron(fmost[0], Affine.identity(src="lm", dst="x"))
    with pytest.raises(SpaceMismatchError, match="in nm"):
        transform_neuron(fmost[0], Affine.identity(src=Space("ccf", "nm"), dst="x"))
    small = DisplacementField(np.zeros((2, 2, 2, 3)), spacing=(10, 10, 10), src=CCF, dst="w")
    with pytest.raises(InputError, match="fall outside the domain"):
        transform_neuron(fmost[0], small)
    assert np.isnan(transform_neuron(fmost[0], small, on_outside="nan").points).any()
    with pytest.raises(InputError, match="dst="):
        transform_neuron(hemibrain[0], chain)


# -- EM block footprint and optical neurons passing through it --------------------------------
def _line_neuron(T: Affine, p0, p1, name, k=101) -> Neuron:
    """An 'optical' neuron: a straight cable drawn in the block's frame, mapped into the CCF."""
    t = np.linspace(0, 1, k)[:, None]
    pts = T.map_points(np.asarray(p0) + t * (np.asarray(p1) - np.asarray(p0)))
    ids = np.arange(1, k + 1)
    return Neuron(pd.DataFrame({"id": ids, "parent": np.r_[-1, ids[:-1]], "x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2]}),
                  CCF, name=name, provenance={"kind": "optical"})


def test_find_passing_affine_block_exact(em_bounds):
    lo, hi = em_bounds
    T = place_block(EM, lo, hi, [6000.0, 4000.0, 5700.0], CCF, rotation_deg=(10, 20, 30))
    block = EMBlock(lo, hi, T, name="hemibrain block")
    c = (lo + hi) / 2
    through = _line_neuron(T, [lo[0] - 5e4, c[1], c[2]], [hi[0] + 7e4, c[1], c[2]], "through")
    diagonal = _line_neuron(T, lo - 0.1 * (hi - lo), hi + 0.2 * (hi - lo), "diagonal", k=57)  # corner to corner
    beside = _line_neuron(T, [lo[0] - 5e4, hi[1] + 2e4, c[2]], [hi[0] + 5e4, hi[1] + 2e4, c[2]], "beside")
    hits = find_passing([through, diagonal, beside], block)
    assert hits["name"].tolist() == ["diagonal", "through"]
    L = hits.set_index("name")["length_inside"]
    # exact clipped lengths in µm (the placement keeps physical size: nm -> µm)
    assert L["through"] == pytest.approx((hi[0] - lo[0]) * 1e-3, rel=1e-9)
    assert L["diagonal"] == pytest.approx(np.linalg.norm(hi - lo) * 1e-3, rel=1e-9)
    assert block.length_inside(beside) == 0.0 and not block.contains(beside.points).any()
    assert block.contains(T.map_points([c]))[0]


def test_find_passing_nonlinear_block_and_real_fmost(hemibrain, fmost, chain, em_bounds):
    lo, hi = em_bounds
    T = chain.transform("hemibrain", "ccf")
    block = EMBlock(lo, hi, T)
    inv = T.inverse()
    # an optical neuron drawn straight through the block in EM space, then warped into the CCF
    c = (lo + hi) / 2
    t = np.linspace(0, 1, 400)[:, None]
    em_line = np.array([lo[0] - 4e4, c[1], c[2]]) + t * np.array([hi[0] - lo[0] + 8e4, 0, 0])
    pts = T.map_points(em_line)
    ids = np.arange(1, 401)
    through = Neuron(pd.DataFrame({"id": ids, "parent": np.r_[-1, ids[:-1]], "x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2]}),
                     CCF, name="through")
    away = Neuron(through.nodes.assign(x=through.nodes["x"] + 2000.0), CCF, name="away")
    hits = find_passing(NeuronList([through, away, *fmost]), block)
    assert "through" in hits["name"].tolist() and "away" not in hits["name"].tolist()
    row = hits.set_index("name").loc["through"]
    # length inside = the part of the warped line whose preimage lies in the box
    inside = np.all((em_line >= lo) & (em_line <= hi), axis=1)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    expect = seg[inside[1:] & inside[:-1]].sum()
    assert row["length_inside"] == pytest.approx(expect, rel=0.01)
    assert np.abs(inv.map_points(pts[inside]) - em_line[inside]).max() < 1.0  # nm
    # real fMOST axons: each neuron found has cable inside, each other one has no node inside
    found = set(hits["name"])
    for n in fmost:
        k = block.contains(n.points).sum()
        assert (n.name in found) == (k > 0 or block.length_inside(n) > 0)


def test_block_placed_on_a_real_axon_finds_it(hemibrain, fmost, em_bounds):
    lo, hi = em_bounds
    n = fmost["18453_4221_x16935_y5165_MOp"]
    # centre the (fly) block on a node halfway along the axon of this mouse neuron
    target = n.points[n.n_nodes // 2]
    T = place_block(EM, lo, hi, target, CCF)
    block = EMBlock(lo, hi, T)
    hits = find_passing(fmost, block)
    assert n.name in hits["name"].tolist()
    r = hits.set_index("name").loc[n.name]
    assert 0 < r["length_inside"] <= r["cable_length"] and r["nodes_inside"] > 0
    # brute-force check of the node count through the inverse map
    q = T.inverse().map_points(n.points)
    assert r["nodes_inside"] == np.all((q >= lo) & (q <= hi), axis=1).sum()


# -- combined collection: write and read back identically --------------------------------------
def test_combined_collection_roundtrip(tmp_path, hemibrain, fmost, chain):
    fmost = fmost[::3]  # 6 of the 16 optical neurons keep the test quick
    both = combine(em=hemibrain, optical=fmost, dst="ccf", em_transform=chain)
    assert len(both) == 11 and both.space.name == "ccf"
    s = both.summary().set_index("name")
    assert (s.loc[hemibrain.names, "source_space"] == "hemibrain").all()
    assert (s.loc[hemibrain.names, "kind"] == "em").all() and (s.loc[fmost.names, "kind"] == "optical").all()
    assert (s.loc[fmost.names, "source_space"] == "ccf").all()
    out = write_collection(both, tmp_path / "combined")
    assert len(list((out / "swc").glob("*.swc"))) == 11
    table = pd.read_parquet(out / "neurons.parquet")
    assert table.set_index("name").loc["722817260", "source_unit"] == "nm"
    assert table.set_index("name").loc["722817260", "transforms"].startswith('["Sequence(hemibrain')
    for source in ("swc", "parquet"):
        back = read_collection(out, source=source)
        assert back == both, source
        assert back["722817260"].synapses.equals(both["722817260"].synapses)
    with pytest.raises(OutputExistsError):
        write_collection(both, out)
    with pytest.raises(SpaceMismatchError):
        combine(em=hemibrain, optical=fmost, dst="ccf")  # EM neurons need a transform
