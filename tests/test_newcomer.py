"""Issue 16: what a new user hits on the real data — `warp --to moving` with any grid of the atlas space."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import atlasreg as ar
from atlasreg.cli import app


@pytest.fixture(scope="module")
def reg200(data_dir, tmp_path_factory):
    """A saved registration onto the real 200 µm CCF grid (a known affine; the sample grid is 100 µm)."""
    import os

    from atlasreg.registration import RegistrationResult

    os.environ["ATLASREG_DATA"] = str(data_dir)
    ccf = ar.Atlas.load("allen_mouse_200um").reference.grid
    mg = ar.Grid((120, 75, 105), (100.0, 100.0, 100.0), ar.Space("sample", "um", "asr"))
    T = ar.Affine.from_translation([300.0, -150.0, 250.0], src=mg.space, dst=ccf.space)
    out = tmp_path_factory.mktemp("reg") / "reg200"
    RegistrationResult(T, mg, ccf, {}, {"preset": "t"}, "test").save(out, figures=False)
    return out


def test_warp_the_25um_annotation_onto_a_200um_registration(reg200, data_dir, tmp_path):
    """`atlasreg warp reg/ ABA_25um_2017_annotation.tif --to moving` after a 200 µm registration: any grid of the
    atlas space works, as `res.warp_back(atlas.annotation)` does in Python; a wrong voxel size is refused."""
    from atlasreg.registration import RegistrationResult

    tif = data_dir / "atlas" / "ABA_25um_2017_annotation.tif"
    out = tmp_path / "ann_on_sample.nii.gz"
    r = CliRunner().invoke(app, ["warp", str(reg200), str(tif), "--to", "moving", "--voxel-size", "25",
                                 "--orientation", "ras", "-o", str(out)])
    assert r.exit_code == 0, r.output
    cli = ar.read_volume(out).numpy()
    res = RegistrationResult.load(reg200)
    py = res.warp_back(ar.Atlas.load("allen_mouse_25um").annotation).numpy()
    assert cli.shape == res.moving_grid.shape and cli.dtype.kind in "iu"
    np.testing.assert_array_equal(cli, py)
    assert (cli > 0).mean() > 0.3
    r = CliRunner().invoke(app, ["warp", str(reg200), str(tif), "--to", "moving", "--voxel-size", "10",
                                 "--orientation", "ras", "-o", str(tmp_path / "bad.nii.gz")])
    assert r.exit_code == 2 and "ABA_25um_2017_annotation.tif" in r.stderr and "voxel size" in r.stderr
