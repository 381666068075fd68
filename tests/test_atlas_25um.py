"""The 25 µm CCFv3 atlas offline (template, annotation, hemispheres, ontology from the mirror) and a registration
to it: points of a sample land on their atlas counterparts, and the reloaded result maps exactly like its ITK files.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

import atlasreg as ar
from atlasreg.atlas import Atlas


@pytest.fixture(scope="module")
def offline(data_dir):
    """The mirror is set and any download attempt fails the test."""
    import pooch

    old = os.environ.get("ATLASREG_DATA")
    os.environ["ATLASREG_DATA"] = str(data_dir)
    real = pooch.retrieve

    def no_download(*a, **k):
        raise AssertionError("tried to download")

    pooch.retrieve = no_download
    yield data_dir
    pooch.retrieve = real
    if old is None:
        os.environ.pop("ATLASREG_DATA", None)
    else:
        os.environ["ATLASREG_DATA"] = old


@pytest.fixture(scope="module")
def atlas25(offline):
    return Atlas.load("allen_mouse_25um")


def test_25um_atlas_loads_offline_with_its_template(atlas25):
    a = atlas25
    assert a.shape == (528, 320, 456) and np.allclose(a.voxel_size, 25.0) and a.orientation == "asr"
    ref = a.reference
    assert ref is not None and ref.shape == a.shape and ref.dtype == np.uint16
    # the template (stored AP/DV/LR) and the annotation (stored LR/AP/DV) end up on one grid, the same way
    # round: the template's brain overlaps the annotated brain (a flipped AP axis gives 0.75)
    r = ref.numpy()
    brain = np.asarray(a.annotation.data) > 0
    tissue = r > np.percentile(r, 60)
    dice = 2 * (tissue & brain).sum() / (tissue.sum() + brain.sum())
    assert dice > 0.85
    h = a.hemispheres.numpy()
    assert set(np.unique(h).tolist()) == {1, 2}
    assert a.structures["VISp"]["id"] == 385
    assert a.info()["has_reference"]


def _block_mean(arr: np.ndarray, f: int) -> np.ndarray:
    s = [n // f for n in arr.shape]
    a = arr[:s[0] * f, :s[1] * f, :s[2] * f].astype(np.float32)
    return a.reshape(s[0], f, s[1], f, s[2], f).mean(axis=(1, 3, 5))


@pytest.fixture(scope="module")
def registered(atlas25, tmp_path_factory):
    """A 'sample' made from the template at 100 µm with a known affine, stored psl, registered to the 25 µm atlas
    (a short run: seconds), saved as `atlasreg register` saves it."""
    from atlasreg.registration import register

    ref = atlas25.reference
    small = ar.Volume(_block_mean(ref.numpy(), 4), 100.0, origin=(37.5, 37.5, 37.5),
                      space=ar.Space("tmp", "um", "asr"))
    c = np.array(small.shape) * 100.0 / 2
    # sample point -> atlas point (the truth): a rotation of 6 degrees about AP and a shift
    truth = ar.Affine(ar.Affine.from_translation([250.0, -150.0, 200.0]).matrix
                      @ ar.Affine.from_rotation([6.0, 0.0, 0.0], center=c).matrix,
                      ar.Space("sample_asr", "um", "asr"), atlas25.space)
    grid = ar.Grid(small.shape, (100.0,) * 3, ar.Space("sample_asr", "um", "asr"))
    # sample(s) = template(truth(s)): warp with the map template frame -> sample frame, truth's inverse
    moved = ar.warp(small, ar.Affine(np.linalg.inv(truth.matrix), "tmp", grid.space), grid)
    # stored psl like the real brain: exact flips/permutation of the asr copy
    asr = ar.Volume(moved.numpy(), 100.0, space=ar.Space("sample", "um", "asr"))
    sample = asr.reorient("psl", ar.Space("sample", "um", "psl"))
    res = register(sample, ref, preset="fast", working_spacing=250.0, syn_iterations=(15,), syn_shrink=(1,),
                   syn_smooth=(0,))
    out = tmp_path_factory.mktemp("reg25") / "reg"
    res.save(out, figures=False)
    # truth in the sample's own (psl) frame: psl -> asr exactly, then the known affine
    to_asr = sample.reorient_transform("asr", ar.Space("sample_asr", "um", "asr"))
    return res, out, sample, to_asr, truth


def test_registration_to_25um_atlas_maps_sample_points_onto_their_counterparts(registered, atlas25):
    res, out, sample, to_asr, truth = registered
    assert res.fixed_grid.shape == (528, 320, 456)
    rng = np.random.default_rng(3)
    data = sample.numpy()
    idx = np.argwhere(data > np.percentile(data, 70))  # inside the tissue
    idx = idx[rng.choice(len(idx), 2000, replace=False)]
    pts = sample.index_to_physical(idx)
    want = truth.map_points(to_asr.map_points(pts))
    got = res.transform.map_points(pts)
    err = np.linalg.norm(got - want, axis=1)
    assert np.median(err) < 60.0 and np.percentile(err, 90) < 150.0, (np.median(err), np.percentile(err, 90))
    # and region-wise: the point's region in the atlas is the one its counterpart is in, for most points
    same = atlas25.region_of(got, on_invalid="ignore") == atlas25.region_of(want, on_invalid="ignore")
    assert same.mean() > 0.6


def test_reloaded_result_maps_like_its_itk_files_and_the_cli(registered, tmp_path):
    from typer.testing import CliRunner

    from atlasreg.cli import app
    from atlasreg.registration import RegistrationResult
    from atlasreg.transforms.files import load_transform

    res, out, sample, _, _ = registered
    again = RegistrationResult.load(out)  # NGFF JSON + its chunked zarr field store
    itk = load_transform(out / "transforms" / "moving_to_fixed.h5", res.moving_grid.space, res.fixed_grid.space)
    rng = np.random.default_rng(4)
    lo, hi = np.zeros(3), (np.array(sample.shape) - 1) * 100.0
    pts = rng.uniform(lo, hi, (20000, 3))
    a, b, c = again.transform.map_points(pts), itk.map_points(pts), res.transform.map_points(pts)
    fin = np.isfinite(a).all(1)
    assert fin.mean() > 0.9
    assert np.array_equal(np.isfinite(b).all(1)[fin], fin[fin])
    assert np.abs(a[fin] - b[fin]).max() < 1e-6 and np.abs(a[fin] - c[fin]).max() < 1e-6
    inv_itk = load_transform(out / "transforms" / "fixed_to_moving.h5", res.fixed_grid.space, res.moving_grid.space)
    q = a[fin][:2000]
    assert np.abs(again.transform.inverse().map_points(q) - inv_itk.map_points(q)).max() < 1e-6
    # `atlasreg points` on the folder gives the same numbers
    csv = tmp_path / "cells.csv"
    pd.DataFrame(pts[:5000], columns=list("xyz")).to_csv(csv, index=False)
    r = CliRunner().invoke(app, ["points", str(out), str(csv), "-o", str(tmp_path / "cells_ccf.csv")])
    assert r.exit_code == 0, r.output
    mapped = pd.read_csv(tmp_path / "cells_ccf.csv")[list("xyz")].to_numpy(float)
    ok = np.isfinite(a[:5000]).all(1)
    assert np.allclose(mapped[ok], a[:5000][ok], atol=1e-3)
