"""Sampling a volume at scattered points (``volume.sample_points``) and the weighted centre of mass
(``registration.preprocess.centre_of_mass``): the two pieces the slab search uses per placement. Oracles:
SimpleITK's own linear interpolation at the same physical points, ``resample`` on a grid, and the centres of mass
that ``initial_affine`` aligns."""
from __future__ import annotations

import numpy as np
import pytest

import atlasreg as ar
from atlasreg.registration.preprocess import centre_of_mass, initial_affine
from atlasreg.volume import Grid, resample, sample_points


@pytest.fixture(scope="module")
def brain(data_dir):
    import tifffile

    img = tifffile.imread(data_dir / "lightsheet" / "brain_psl_50x40x40um.tif")[::4, ::4, ::4].astype(np.float32)
    return ar.Volume(img, (200.0, 160.0, 160.0), origin=(30.0, -20.0, 10.0), space="sample")


def test_sample_points_matches_simpleitk_at_the_same_points(brain):
    import SimpleITK as sitk

    rng = np.random.default_rng(3)
    lo, hi = brain.grid.bounds()
    pts = rng.uniform(lo + 1.0, hi - 1.0, (300, 3))  # inside: SimpleITK's outside value is its own business
    got = sample_points(brain, pts)
    img = brain.to_sitk()
    # to_sitk keeps atlasreg's axis order as SimpleITK's x, y, z, and its physical frame
    want = np.array([img.EvaluateAtPhysicalPoint(tuple(float(c) for c in p), sitk.sitkLinear) for p in pts])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_sample_points_is_resample_at_the_voxel_centres_and_fill_outside(brain):
    grid = Grid((7, 5, 6), (230.0, 170.0, 190.0), brain.space, origin=(400.0, 300.0, 500.0))
    on_grid = resample(brain, None, grid)
    pts = grid.index_to_physical(np.argwhere(np.ones(grid.shape, bool)))
    # resample stores float32 for a float32 volume: the same numbers, rounded once
    np.testing.assert_array_equal(sample_points(brain, pts).reshape(grid.shape).astype(np.float32), on_grid)
    far = np.array([[-1e6, 0.0, 0.0], [np.nan, 0.0, 0.0]])
    assert sample_points(brain, far, fill=-7.0).tolist() == [-7.0, -7.0]
    assert np.isnan(sample_points(brain, far[:1], fill=np.nan)).all()
    with pytest.raises(ar.InputError, match=r"shape \(N, 3\)"):
        sample_points(brain, np.zeros((4, 2)))


def test_centre_of_mass_is_what_the_com_initialisation_aligns(brain):
    a = brain.numpy()
    mask = a > np.percentile(a, 70)
    other = ar.Volume(np.roll(a, (3, -2, 4), axis=(0, 1, 2)), brain.voxel_size, (100.0, 50.0, -40.0), space="moving")
    init = initial_affine(brain, other, mask, np.roll(mask, (3, -2, 4), axis=(0, 1, 2)), "com")
    shift = centre_of_mass(other, np.roll(mask, (3, -2, 4), axis=(0, 1, 2))) - centre_of_mass(brain, mask)
    np.testing.assert_allclose(init.matrix[:3, 3], shift, atol=1e-6)
    # a plain non-negative image without a mask whose median is 0: scipy's centre of mass, in µm
    from scipy import ndimage as ndi

    spot = np.zeros((9, 8, 7))
    spot[2:4, 5, 1:6] = [1.0, 2.0, 3.0, 4.0, 5.0]
    v = ar.Volume(spot, (10.0, 20.0, 30.0), origin=(1.0, 2.0, 3.0))
    np.testing.assert_allclose(centre_of_mass(v), v.index_to_physical([ndi.center_of_mass(spot)])[0])
