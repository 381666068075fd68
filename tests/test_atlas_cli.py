"""``atlasreg query`` and ``atlasreg atlas list|info`` on the real 200 µm CCF atlas."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from atlasreg.atlas import Atlas
from atlasreg.cli import app


@pytest.fixture(scope="module")
def env(data_dir):
    return {"ATLASREG_DATA": str(data_dir)}


@pytest.fixture(scope="module")
def atlas200(data_dir):
    import os

    os.environ.setdefault("ATLASREG_DATA", str(data_dir))
    return Atlas.load("allen_mouse_200um")


@pytest.fixture
def cells(tmp_path):
    rng = np.random.default_rng(11)
    pts = rng.uniform([1000, 500, 1000], [12000, 7000, 10500], size=(400, 3))
    pts[3] = [-900.0, 10.0, 10.0]                      # outside the volume
    df = pd.DataFrame({"cell": np.arange(len(pts)), "ap": pts[:, 0], "dv": pts[:, 1], "lr": pts[:, 2]})
    p = tmp_path / "cells.csv"
    df.to_csv(p, index=False)
    return p, pts


def test_query_adds_region_columns(env, atlas200, cells, tmp_path):
    from atlasreg.tracings import annotate_table

    path, pts = cells
    out = tmp_path / "out.csv"
    r = CliRunner().invoke(app, ["query", str(path), "--atlas", "allen_mouse_200um", "--columns", "ap,dv,lr",
                                 "-o", str(out)], env=env)
    assert r.exit_code == 0, r.output
    t = pd.read_csv(out, keep_default_na=False)
    assert list(t.columns) == ["cell", "ap", "dv", "lr", "region_id", "acronym", "hemisphere"]
    ids = atlas200.region_of(pts)
    assert t["region_id"].tolist() == ids.tolist()
    assert t.loc[ids > 0, "acronym"].tolist() == atlas200.ontology.acronyms(ids[ids > 0]).tolist()
    assert t.loc[3, "region_id"] == -1 and t.loc[3, "hemisphere"] == -1
    assert t["hemisphere"].tolist() == atlas200.hemisphere_of(pts).tolist()
    # the CLI writes the table annotate_table returns from Python (issue 16, item 13)
    py = tmp_path / "py.csv"
    annotate_table(pd.read_csv(path), atlas200, columns=("ap", "dv", "lr")).to_csv(py, index=False)
    pd.testing.assert_frame_equal(t, pd.read_csv(py, keep_default_na=False))
    # exists -> exit 4 without --force; --force overwrites
    r = CliRunner().invoke(app, ["query", str(path), "--atlas", "allen_mouse_200um", "--columns", "ap,dv,lr",
                                 "-o", str(out)], env=env)
    assert r.exit_code == 4
    r = CliRunner().invoke(app, ["query", str(path), "--atlas", "allen_mouse_200um", "--columns", "ap,dv,lr",
                                 "-o", str(out), "--force", "--level", "3"], env=env)
    assert r.exit_code == 0, r.output
    t = pd.read_csv(out, keep_default_na=False)
    assert t["region_id"].tolist() == ids.tolist()
    assert t["rollup_id"].tolist() == atlas200.ontology.at_level(ids, 3).tolist()
    annotate_table(pd.read_csv(path), atlas200, columns=("ap", "dv", "lr"), level=3).to_csv(py, index=False)
    pd.testing.assert_frame_equal(t, pd.read_csv(py, keep_default_na=False))


def test_query_units_orientation_and_errors(env, atlas200, cells, tmp_path):
    path, pts = cells
    ids = atlas200.region_of(pts)
    mm = tmp_path / "mm.csv"
    pd.DataFrame({"x": pts[:, 0] / 1000, "y": pts[:, 1] / 1000, "z": pts[:, 2] / 1000}).to_csv(mm, index=False)
    out = tmp_path / "o.csv"
    r = CliRunner().invoke(app, ["query", str(mm), "--atlas", "allen_mouse_200um", "--unit", "mm", "-o", str(out)],
                           env=env)
    assert r.exit_code == 0, r.output
    assert pd.read_csv(out)["region_id"].tolist() == ids.tolist()
    # the same points with axes given as psl (flipped across the atlas volume)
    from atlasreg.spaces import reorient_points

    psl = reorient_points(pts, "asr", "psl", atlas200.shape, atlas200.voxel_size)
    pp = tmp_path / "psl.csv"
    pd.DataFrame(psl, columns=["x", "y", "z"]).to_csv(pp, index=False)
    r = CliRunner().invoke(app, ["query", str(pp), "--atlas", "allen_mouse_200um", "--orientation", "psl",
                                 "-o", str(tmp_path / "p.csv")], env=env)
    assert r.exit_code == 0, r.output
    assert pd.read_csv(tmp_path / "p.csv")["region_id"].tolist() == ids.tolist()
    bad = CliRunner().invoke(app, ["query", str(path), "--atlas", "allen_mouse_200um", "-o", str(tmp_path / "b.csv")],
                             env=env)
    assert bad.exit_code == 2 and "columns" in bad.output and "ap" in bad.output
    bad = CliRunner().invoke(app, ["query", str(path), "--atlas", "allen_mose_200um", "--columns", "ap,dv,lr",
                                   "-o", str(tmp_path / "b.csv")], env=env)
    assert bad.exit_code == 2 and "allen_mouse_200um" in bad.output


def test_atlas_list_info_and_help(env, data_dir):
    r = CliRunner()
    out = r.invoke(app, ["atlas", "list"], env=env)
    assert out.exit_code == 0 and "allen_mouse_25um" in out.output and "(mirror)" in out.output
    out = r.invoke(app, ["atlas", "info", "allen_mouse_200um", "--json"], env=env)
    assert out.exit_code == 0
    import json

    info = json.loads(out.output)
    assert info["space"] == "ccf" and info["orientation"] == "asr" and info["shape"] == [66, 40, 57]
    out = r.invoke(app, ["atlas", "info", str(data_dir / "atlas" / "allen_mouse_200um.npz"), "--ontology",
                         str(data_dir / "atlas" / "allen_structure_tree.csv"), "--voxel-size", "200",
                         "--file-orientation", "asr"], env=env)
    assert out.exit_code == 0 and "labels_in_annotation" in out.output
    out = r.invoke(app, ["atlas", "info", str(data_dir / "atlas" / "allen_mouse_200um.npz")], env=env)
    assert out.exit_code == 2 and "ontology" in out.output
    for verb in (["query"], ["atlas", "list"], ["atlas", "info"]):
        h = r.invoke(app, verb + ["--help"])
        assert h.exit_code == 0 and "Example" in h.output
