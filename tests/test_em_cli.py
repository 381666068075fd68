"""``atlasreg em pyramid|crop`` on the command line."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

import atlasreg as ar
from atlasreg.cli import app


@pytest.fixture(scope="module")
def em_zarr(data_dir, tmp_path_factory):
    import zarr

    a = tifffile.imread(data_dir / "em" / "isbi2012_train_volume_30x512x512.tif")[:8]
    p = tmp_path_factory.mktemp("cli") / "em.zarr"
    z = zarr.open_array(str(p), mode="w", shape=a.shape, chunks=(4, 128, 128), dtype=a.dtype, zarr_format=2)
    z[:] = a
    return p, a


def test_help_has_examples():
    for verb in ("pyramid", "crop", "refine"):
        r = CliRunner().invoke(app, ["em", verb, "--help"])
        assert r.exit_code == 0 and "Example" in r.output and "atlasreg em " + verb in r.output


def test_pyramid_verb(em_zarr, tmp_path):
    src, a = em_zarr
    out = tmp_path / "em.ome.zarr"
    r = CliRunner().invoke(app, ["em", "pyramid", str(src), "-o", str(out), "--voxel-size", "50,4,4", "--unit", "nm",
                                 "--target", "0.03um", "--space", "em"])
    assert r.exit_code == 0, r.output
    assert "level 3: shape (8, 64, 64), voxel (50.0, 32.0, 32.0) nm" in r.output
    v = ar.read_volume(out, level=3)
    assert v.space == ar.Space("em", "nm") and np.allclose(v.origin, [0, 14, 14])
    want = np.rint(a.reshape(8, 64, 8, 64, 8).mean(axis=(2, 4)))  # 8x8 means: three rounded 2x2 steps differ by <= 1
    assert np.abs(v.numpy().astype(float) - want).max() <= 1
    # --start-level: no full-resolution copy; the levels keep their true geometry
    r = CliRunner().invoke(app, ["em", "pyramid", str(src), "-o", str(tmp_path / "s.ome.zarr"), "--voxel-size",
                                 "50,4,4", "--unit", "nm", "--target", "30", "--start-level", "2"])
    assert r.exit_code == 0, r.output
    assert "level 1: shape (8, 64, 64), voxel (50.0, 32.0, 32.0) nm (source level 3)" in r.output
    assert np.allclose(ar.read_volume(tmp_path / "s.ome.zarr", level=1).origin, [0, 14, 14])
    # existing output without --force: exit 4
    r = CliRunner().invoke(app, ["em", "pyramid", str(src), "-o", str(out), "--voxel-size", "50,4,4", "--unit", "nm",
                                 "--target", "30"])
    assert r.exit_code == 4


@pytest.mark.parametrize("args, msg", [
    (["--voxel-size", "50,4,4", "--unit", "furlong", "--target", "30"], "unknown unit"),
    (["--voxel-size", "50,4,4", "--unit", "nm", "--target", "2nm"], "not coarser than the source"),
    (["--voxel-size", "50,4,4", "--unit", "nm", "--target", "5 parsec"], "unknown unit"),
    (["--voxel-size", "50,4,4", "--unit", "nm", "--target", "30,2"], "one length or three"),
])
def test_pyramid_bad_input_exit_2_one_line(em_zarr, tmp_path, args, msg):
    src, _ = em_zarr
    r = CliRunner().invoke(app, ["em", "pyramid", str(src), "-o", str(tmp_path / "o.ome.zarr"), *args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0]
    assert not (tmp_path / "o.ome.zarr").exists()


def test_crop_verb(em_zarr, tmp_path):
    src, _ = em_zarr
    lm = ar.Volume(np.random.default_rng(0).integers(0, 1000, (40, 70, 70)).astype(np.uint16), (0.1, 0.05, 0.05),
                   origin=(1.0, 2.0, 3.0), space=ar.Space("lm", "um"))
    ar.write_volume(lm, tmp_path / "lm.nii.gz")
    T = ar.Sequence([ar.Affine.from_units(ar.Space("em", "nm"), ar.Space("em_um", "um")),
                     ar.Affine.from_translation([1.5, 2.5, 3.5], src="em_um", dst=ar.Space("lm", "um"))])
    ar.save_transform(T, tmp_path / "em_to_lm.json")
    out = tmp_path / "crop.nii.gz"
    r = CliRunner().invoke(app, ["em", "crop", str(src), str(tmp_path / "lm.nii.gz"), "-t",
                                 str(tmp_path / "em_to_lm.json"), "--em-voxel-size", "50,4,4", "--margin", "0.1",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    c = ar.read_volume(out, space="lm")
    i0 = np.rint(lm.physical_to_index(c.origin[None])[0]).astype(int)
    np.testing.assert_array_equal(c.numpy(), lm.numpy()[i0[0]:i0[0] + c.shape[0], i0[1]:i0[1] + c.shape[1],
                                                          i0[2]:i0[2] + c.shape[2]])
    assert c.shape == (7, 46, 46)  # 0.4 x 2.05 x 2.05 um + 0.1 um margin, in 0.1 x 0.05 x 0.05 um voxels


def test_refine_verb_on_the_isbi_pair(data_dir, tmp_path):
    import pandas as pd

    from atlasreg.em import build_pyramid, synthetic_lm_pair

    EM, LM = ar.Space("em", "nm"), ar.Space("lm", "um")
    a = tifffile.imread(data_dir / "em" / "isbi2012_train_volume_30x512x512.tif")
    em = ar.Volume(a, (50, 4, 4), space=EM)
    pair = synthetic_lm_pair(em, lm_voxel_size=(75, 24, 24), psf_sigma=(75, 24, 24))
    ar.write_volume(pair.lm, tmp_path / "lm.tif")
    block = ar.Volume(a[5:25, 32:480, 32:480], (50, 4, 4), origin=em.index_to_physical([[5, 32, 32]])[0], space=EM)
    build_pyramid(block, tmp_path / "em.ome.zarr", target_voxel_size=(75, 24, 24))
    rng = np.random.default_rng(1)
    src = block.index_to_physical(rng.uniform(0, np.array(block.shape) - 1, (16, 3)))
    dst = pair.truth.map_points(src) + rng.normal(0, 0.03, (16, 3))
    fit = ar.fit_landmarks(src[:6], dst[:6] + [0.0, 0.02, -0.015], model="affine", src=EM, dst=LM)
    ar.save_transform(fit, tmp_path / "fit.json")
    pd.DataFrame({"em_x": src[6:, 0], "em_y": src[6:, 1], "em_z": src[6:, 2],
                  "lm_x": dst[6:, 0], "lm_y": dst[6:, 1], "lm_z": dst[6:, 2]}).to_csv(tmp_path / "held.csv", index=False)
    out = tmp_path / "refined.json"
    r = CliRunner().invoke(app, ["em", "refine", str(tmp_path / "em.ome.zarr"), str(tmp_path / "lm.tif"), "-t",
                                 str(tmp_path / "fit.json"), "--heldout", str(tmp_path / "held.csv"), "--psf",
                                 "0.075,0.024,0.024", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "kept the refinement" in r.output and "EM level 3" in r.output
    T = ar.load_transform(out)
    lattice = block.index_to_physical(np.indices((3, 3, 3)).reshape(3, -1).T * (np.array(block.shape) - 1) / 2)
    err = lambda t: np.median(np.linalg.norm(t.map_points(lattice) - pair.truth.map_points(lattice), axis=1))  # noqa
    assert err(T) < 0.5 * err(fit)
    import json

    rep = json.loads((tmp_path / "refined.report.json").read_text())
    assert rep["accepted"] and rep["heldout_after"]["median"] <= rep["heldout_before"]["median"]
    # too few held-out pairs: exit 2, nothing written
    pd.read_csv(tmp_path / "held.csv").iloc[:2].to_csv(tmp_path / "two.csv", index=False)
    r = CliRunner().invoke(app, ["em", "refine", str(tmp_path / "em.ome.zarr"), str(tmp_path / "lm.tif"), "-t",
                                 str(tmp_path / "fit.json"), "--heldout", str(tmp_path / "two.csv"), "-o",
                                 str(tmp_path / "r2.json")])
    assert r.exit_code == 2 and "at least 3" in r.output and not (tmp_path / "r2.json").exists()
