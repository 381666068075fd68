"""The neuroglancer state: EM block, light-sheet and the atlas annotation (with region names) in one view,
checked with neuroglancer's own ViewerState parser; every source resolves to the folder atlasreg wrote."""
from __future__ import annotations

import json

import neuroglancer  # the test extra installs neuroglancer and tensorstore
import numpy as np
import pytest
import tifffile

import atlasreg as ar
from atlasreg.errors import InputError
from atlasreg.io.precomputed import write_precomputed
from atlasreg.qc.neuroglancer import neuroglancer_state, neuroglancer_url, write_neuroglancer_state

BASE = "http://localhost:8000"
CCF = ar.Space("ccf", "um", "asr")


@pytest.fixture(scope="module")
def written(data_dir, tmp_path_factory):
    """What a user registered, all in CCF: the atlas annotation, a light-sheet brain, an EM block, cells."""
    root = tmp_path_factory.mktemp("ng")
    atlas = ar.Atlas.load(data_dir / "atlas" / "allen_mouse_200um.npz",
                          ontology=data_dir / "atlas" / "allen_structure_tree.csv", voxel_size=200,
                          file_orientation="asr")
    write_precomputed(atlas.annotation, root / "atlas", labels=atlas.ontology, chunks=32)
    lm = tifffile.imread(data_dir / "lightsheet" / "brain_psl_50x40x40um.tif")[::4, ::4, ::4]
    # (pretend-registered) light-sheet in CCF, voxel centre 0 at the CCF origin: not on a corner grid
    write_precomputed(ar.Volume(np.ascontiguousarray(lm), (200, 160, 160), space=CCF), root / "lightsheet")
    em = tifffile.imread(data_dir / "em" / "isbi2012_train_volume_30x512x512.tif")[:8, :64, :64]
    em_ccf = ar.Volume(np.ascontiguousarray(em), (0.05, 0.004, 0.004), origin=(5000.025, 4000.002, 6000.002),
                       space=CCF)
    write_precomputed(em_ccf, root / "em", chunks=(8, 64, 64))
    import pandas as pd

    cells = ar.tracings.PointTable(pd.DataFrame({"x": [5000.1, 6000.0], "y": [4000.1, 3000.0],
                                                 "z": [6000.1, 5000.0]}), CCF)
    ar.tracings.write_precomputed_points(cells, root / "cells")
    return root, atlas


def test_state_opens_all_layers_in_one_view(written):
    root, atlas = written
    layers = [("atlas regions", root / "atlas"), ("light-sheet", root / "lightsheet"), ("EM", root / "em"),
              ("cells", root / "cells")]
    state = neuroglancer_state(layers, root=root, base_url=BASE)
    # neuroglancer's own parser accepts it and sees the layer types we meant
    vs = neuroglancer.ViewerState(json.loads(json.dumps(state)))
    assert [layer.name for layer in vs.layers] == [n for n, _ in layers]
    assert [vs.layers[n].type for n, _ in layers] == ["segmentation", "image", "image", "annotation"]
    assert vs.dimensions.names == ("x", "y", "z") and vs.dimensions.units == ("m", "m", "m")
    np.testing.assert_allclose(vs.dimensions.scales, [200e-6] * 3)
    # the view starts at the atlas centre: voxel centre (n - 1) / 2, in 200 um units (neuroglancer's frame is
    # atlasreg's once the half-voxel shift below is applied)
    np.testing.assert_allclose(vs.position, (np.array(atlas.annotation.shape) - 1) / 2)
    for (name, folder), layer in zip(layers, state["layers"]):
        src = layer["source"] if isinstance(layer["source"], str) else layer["source"]["url"]
        assert src.startswith("precomputed://" + BASE + "/")
        rel = src[len("precomputed://" + BASE + "/"):]
        assert (root / rel).resolve() == folder.resolve() and (root / rel / "info").is_file()
    # the atlas layer carries region names as segment properties
    info = json.loads((root / "atlas" / "info").read_text())
    props = json.loads((root / "atlas" / info["segment_properties"] / "info").read_text())
    named = dict(zip(props["inline"]["ids"], props["inline"]["properties"][0]["values"]))
    desc = dict(zip(props["inline"]["ids"], props["inline"]["properties"][1]["values"]))
    assert named["315"] == "Isocortex" and desc["315"] == "Isocortex" and named["672"] == "CP"
    assert desc["672"] == "Caudoputamen"
    # the light-sheet's voxel centre 0 sits at the CCF origin: the file's offset is the corner below, and the
    # state shifts the layer by the remaining half voxel
    lm_src = state["layers"][1]["source"]
    np.testing.assert_allclose(np.array(lm_src["transform"]["matrix"])[:, 3], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(vs.layers["light-sheet"].source[0].transform.matrix[:, 3], [0.5, 0.5, 0.5])
    assert lm_src["transform"]["outputDimensions"]["x"] == [200e-6, "m"]
    assert neuroglancer_url(state).startswith("https://neuroglancer-demo.appspot.com/#!%7B")
    out = write_neuroglancer_state(state, root / "view.json")
    assert json.loads(out.read_text()) == json.loads(json.dumps(state))


def test_every_volume_source_opens_where_atlasreg_placed_it(written):
    root, atlas = written
    a = ar.read_volume(root / "atlas")
    assert a.space == atlas.space
    np.testing.assert_allclose(a.voxel_size, atlas.annotation.voxel_size)
    np.testing.assert_allclose(a.origin, atlas.annotation.origin, atol=1e-9)
    np.testing.assert_array_equal(a.numpy(), np.asarray(atlas.annotation.data))
    em = ar.read_volume("precomputed://file://" + str(root / "em"))
    np.testing.assert_allclose(em.origin, (5000.025, 4000.002, 6000.002))


def test_layers_in_different_spaces_are_refused(written, tmp_path):
    root, _ = written
    write_precomputed(ar.Volume(np.zeros((4, 4, 4), np.uint8), 8, space=ar.Space("em", "nm")), root / "other_em")
    with pytest.raises(InputError, match="different spaces.*warp"):
        neuroglancer_state([("atlas", root / "atlas"), ("em", root / "other_em")], root=root, base_url=BASE)
    with pytest.raises(InputError, match="base_url"):
        neuroglancer_state([("atlas", root / "atlas")])
    with pytest.raises(InputError, match="not inside root"):
        neuroglancer_state([("atlas", root / "atlas")], root=tmp_path, base_url=BASE)
    with pytest.raises(InputError, match="two layers"):
        neuroglancer_state([("a", root / "atlas"), ("a", root / "em")], root=root, base_url=BASE)
    # a published dataset given with its type passes through unchanged (nothing is fetched)
    h01 = "precomputed://gs://h01-release/data/20210601/4nm_raw"
    st = neuroglancer_state([("atlas", root / "atlas"), {"name": "H01", "source": h01, "type": "image"}], root=root,
                            base_url=BASE)
    assert st["layers"][1] == {"type": "image", "source": h01, "name": "H01"}
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="not a neuroglancer precomputed"):
        neuroglancer_state([("x", tmp_path / "x")], root=tmp_path, base_url=BASE)


def test_neuroglancer_verb(written, tmp_path):
    from typer.testing import CliRunner

    from atlasreg.cli import app

    root, _ = written
    out = root / "cli_view.json"
    r = CliRunner().invoke(app, ["neuroglancer", f"atlas={root / 'atlas'}", f"EM={root / 'em'}", "--root", str(root),
                                 "--base-url", BASE, "-o", str(out)])
    assert r.exit_code == 0, r.output
    state = json.loads(out.read_text())
    assert state == neuroglancer_state([("atlas", root / "atlas"), ("EM", root / "em")], root=root, base_url=BASE)
    assert neuroglancer_url(state) in r.output
    r = CliRunner().invoke(app, ["neuroglancer", f"atlas={root / 'atlas'}", "-o", str(tmp_path / "v.json")])
    assert r.exit_code == 2 and "--base-url" in r.output and "base_url=" not in r.output, r.output
    r = CliRunner().invoke(app, ["neuroglancer", str(root / "atlas"), "-o", str(tmp_path / "v.json")])
    assert r.exit_code == 2 and "NAME=PATH" in r.output


def test_atlas_annotation_warped_into_an_em_block(written, tmp_path):
    """The atlas regions on an EM block's grid, written as a precomputed segmentation: what cloud-volume reads at
    each voxel is the region the atlas gives for that voxel's centre mapped into CCF."""
    import cloudvolume

    _, atlas = written
    EM = ar.Space("em", "nm")
    T = ar.Sequence([ar.Affine.from_units(EM, ar.Space("em_um", "um")),
                     ar.Affine.from_translation([5013.0, 3987.0, 6031.0], src="em_um", dst=atlas.space)])
    res = np.array([20000.0, 20000.0, 20000.0])                # a coarse level of an EM pyramid: 1.2 x 1 x 0.6 mm
    grid = ar.Grid((60, 50, 30), tuple(res), EM, origin=tuple((np.array([0, 0, 0]) + 0.5) * res))
    regions = ar.warp(atlas.annotation, T, grid, interpolation="nearest")
    out = write_precomputed(regions, tmp_path / "atlas_in_em", labels=atlas.ontology)
    got = np.asarray(cloudvolume.CloudVolume("file://" + str(out), progress=False)[:, :, :])[..., 0]
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    want = atlas.region_of(T.map_points(regions.index_to_physical(idx))).reshape(grid.shape)
    assert (got == want).mean() > 0.999 and len(np.unique(got)) > 3
    info = json.loads((out / "info").read_text())
    assert info["type"] == "segmentation" and info["scales"][0]["voxel_offset"] == [0, 0, 0]
