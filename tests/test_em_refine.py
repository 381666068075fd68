"""Intensity refinement of an EM -> light-sheet landmark fit on a synthetic pair built from the real ISBI EM stack.

The light-sheet side is made from the EM with a known affine (rotation, scale, shift), an anisotropic PSF,
contrast inversion, gamma and noise; the landmark fit uses 6 noisy, slightly biased pairs; 12 other noisy pairs are
held out. (The ISBI stack is 2 x 2 x 1.5 um: the light-sheet grid is scaled down with it, 6x coarser in-plane.)
"""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

import atlasreg as ar
from atlasreg.em import build_pyramid, crop_lm, refine_landmark_fit, synthetic_lm_pair
from atlasreg.errors import InputError

EM = ar.Space("em", "nm")
LM = ar.Space("lm", "um")
PSF = (0.075, 0.024, 0.024)  # um, axial larger


@pytest.fixture(scope="module")
def case(data_dir, tmp_path_factory):
    a = tifffile.imread(data_dir / "em" / "isbi2012_train_volume_30x512x512.tif")
    em = ar.Volume(a, (50, 4, 4), space=EM)
    pair = synthetic_lm_pair(em, lm_voxel_size=(75, 24, 24), psf_sigma=(75, 24, 24))
    block = ar.Volume(a[5:25, 32:480, 32:480], (50, 4, 4), origin=em.index_to_physical([[5, 32, 32]])[0], space=EM)
    pyr = build_pyramid(block, tmp_path_factory.mktemp("em") / "block.ome.zarr", target_voxel_size=(75, 24, 24))
    level = pyr.level(pyr.level_for((75, 24, 24)) - 1)  # the last level finer than the light-sheet voxels
    rng = np.random.default_rng(0)

    def picks(n):
        return block.index_to_physical(rng.uniform(0, np.array(block.shape) - 1, (n, 3)))

    G = pair.truth
    fit_src, held_src = picks(6), picks(12)
    fit_dst = G.map_points(fit_src) + rng.normal(0, 0.03, (6, 3)) + [0.0, 0.02, -0.015]
    held_dst = G.map_points(held_src) + rng.normal(0, 0.03, (12, 3))
    fit = ar.fit_landmarks(fit_src, fit_dst, model="affine", src=EM, dst=LM)
    crop = crop_lm(block, pair.lm, fit, margin=0.05)
    lattice = block.index_to_physical(np.stack(np.meshgrid(*[np.linspace(0, s - 1, 6) for s in block.shape],
                                                           indexing="ij"), -1).reshape(-1, 3))
    return dict(em=em, pair=pair, block=block, level=level, fit=fit, crop=crop, held_src=held_src,
                held_dst=held_dst, lattice=lattice, G=G)


def _truth_error(T, c):
    return np.abs(T.map_points(c["lattice"]) - c["G"].map_points(c["lattice"]))


def test_refinement_recovers_much_of_an_imperfect_landmark_fit(case):
    c = case
    res = refine_landmark_fit(c["level"], c["crop"], c["fit"], c["held_src"], c["held_dst"], psf_sigma=PSF)
    assert res.accepted and res.transform is res.refined
    assert isinstance(res.refined, ar.Affine) and res.refined.src == EM and res.refined.dst == LM
    before, after = _truth_error(c["fit"], c), _truth_error(res.refined, c)
    nb, na = np.median(np.linalg.norm(before, axis=1)), np.median(np.linalg.norm(after, axis=1))
    # the fit is ~2 light-sheet voxels (24 nm in-plane) off; the refinement gets to a fraction of a voxel
    assert nb > 0.04 and na < 0.3 * nb and na < 0.012
    assert np.median(after[:, 1:]) < 0.3 * np.median(before[:, 1:]) and np.median(after[:, 1:]) < 0.008
    assert np.median(after[:, 0]) < 0.5 * np.median(before[:, 0])
    assert np.median(res.heldout_after) <= np.median(res.heldout_before)
    assert res.metric_after < res.metric_before  # Mattes MI: lower is better
    d = res.to_dict()
    assert d["accepted"] and d["heldout_after"]["median"] <= d["heldout_before"]["median"] and d["unit"] == "um"
    assert "kept the refinement" in res.summary()


def test_a_refinement_that_contradicts_held_out_landmarks_is_rejected(case):
    """The light-sheet image is shifted 150 nm from where every landmark says it is: intensity pulls the map
    away from the landmarks, the held-out check notices and keeps the landmark fit."""
    c = case
    lm_full = ar.Volume(c["pair"].lm.data, c["pair"].lm.voxel_size, c["pair"].lm.origin + [0.0, 0.15, 0.0], None, LM)
    with pytest.warns(UserWarning, match="clipped"):  # the shifted volume no longer covers the whole margin
        crop = crop_lm(c["block"], lm_full, c["fit"], margin=0.05)
    with pytest.warns(UserWarning, match="keeping the landmark fit"):
        res = refine_landmark_fit(c["level"], crop, c["fit"], c["held_src"], c["held_dst"], psf_sigma=PSF)
    assert not res.accepted and res.transform is c["fit"]
    assert np.median(res.heldout_after) > np.median(res.heldout_before)


def test_bad_input(case):
    c = case
    args = (c["level"], c["crop"], c["fit"])
    with pytest.raises(InputError, match="at least 3"):
        refine_landmark_fit(*args, c["held_src"][:2], c["held_dst"][:2])
    with pytest.raises(InputError, match="12 held-out source points but 11"):
        refine_landmark_fit(*args, c["held_src"], c["held_dst"][:11])
    with pytest.raises(InputError, match="unknown refinement model"):
        refine_landmark_fit(*args, c["held_src"], c["held_dst"], model="syn")
    with pytest.raises(InputError, match="psf_sigma"):
        refine_landmark_fit(*args, c["held_src"], c["held_dst"], psf_sigma=-1)
    wrong = ar.Affine(c["fit"].matrix, ar.Space("sample", "nm"), LM)
    with pytest.raises(InputError, match="do not chain"):
        refine_landmark_fit(c["level"], c["crop"], wrong, c["held_src"], c["held_dst"])
    nan = c["held_dst"].copy()
    nan[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        refine_landmark_fit(*args, c["held_src"], nan)


def test_bspline_refinement_records_its_zero_filled_inverse_nodes(case):
    c = case
    res = refine_landmark_fit(c["level"], c["crop"], c["fit"], c["held_src"], c["held_dst"], psf_sigma=PSF,
                              model="bspline", bspline_iterations=5)
    n = res.info["inverse_zero_filled_nodes"]  # nodes of the sampled inverse given zero displacement knowingly
    assert isinstance(n, int) and n >= 0 and res.to_dict()["inverse_zero_filled_nodes"] == n
    assert np.isfinite(res.refined.map_points(c["held_src"])).all()
