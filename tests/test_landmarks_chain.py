"""The Zheng CA3 chain: a real EM block carried EM (nm) -> micro-CT (µm) -> CCF (µm) and found in its atlas region."""
from __future__ import annotations

import numpy as np
import pytest

from atlasreg import Space, SpaceGraph
from atlasreg.atlas import Atlas
from atlasreg.io.landmarks import read_landmarks
from atlasreg.registration.landmarks import fit_landmarks

CCF = Space("ccf", "um", "asr")


@pytest.fixture(scope="module")
def chain(data_dir):
    d = data_dir / "em_lm"
    em_uct = read_landmarks(d / "zheng-ca3-em-to-uct.csv")  # x_em_nm ... x_uct_um
    uct_ccf = read_landmarks(d / "zheng-ca3-uct-to-ccf.csv", src_unit="um", dst=CCF)  # CCF x=AP, y=DV, z=LR
    Ta, Tb = fit_landmarks(em_uct), fit_landmarks(uct_ccf)
    return em_uct, uct_ccf, Ta, Tb, SpaceGraph([Ta, Tb])


@pytest.fixture(scope="module")
def atlas(data_dir):
    a = data_dir / "atlas"
    # The 25 µm annotation is stored (LR, AP, DV) with AP and DV starting anterior and dorsal.
    return Atlas.load(annotation=a / "ABA_25um_2017_annotation.tif", ontology=a / "allen_structure_tree.csv",
                      voxel_size=25, file_orientation="ras", orientation="asr", space="ccf")


def test_models_chosen_by_cross_validation(chain):
    em_uct, uct_ccf, Ta, Tb, _ = chain
    ra, rb = Ta.report, Tb.report
    assert ra.src_unit == "nm" and ra.dst_unit == "um" and rb.dst_unit == "um"
    # µCT -> CCF is nonlinear: affine leaves ~66 µm held out; the choice must not be worse than affine.
    aff = next(c for c in rb.candidates if c["model"] == "affine")
    assert aff["cv_median"] > 50
    assert rb.cv_mean <= aff["cv_mean"]
    # Every candidate was scored; the winner is flagged.
    assert sum(c["selected"] for c in ra.candidates) == 1 and {"rigid", "affine"} <= {c["model"] for c in ra.candidates}
    assert ra.cv_median < 10  # µm, EM -> µCT (1.31 µm voxels)


def test_em_landmarks_land_in_ca3(chain, atlas):
    em_uct, _, _, _, g = chain
    ccf = g.map_points(em_uct.src_points, "em", "ccf")
    ids = atlas.region_of(ccf, space="ccf")
    onto = atlas.ontology
    ca3 = onto.id_of("CA3")
    assert ca3 == 463
    in_ca3 = [i > 0 and (int(i) == ca3 or ca3 in onto.ancestors(int(i))) for i in ids]
    assert sum(in_ca3) >= 12, [onto[int(i)].acronym if i > 0 else int(i) for i in ids]


def test_chain_inverts(chain):
    em_uct, _, _, _, g = chain
    ccf = g.map_points(em_uct.src_points, "em", "ccf")
    back = g.map_points(ccf, "ccf", "em")
    np.testing.assert_allclose(back, em_uct.src_points, atol=1.0)  # nm


def test_em_volume_warped_into_ccf_in_one_call(chain, atlas):
    """EM voxels -> EM nm (the volume's geometry) -> micro-CT -> CCF: one ``SpaceGraph.warp`` call, one resampling.

    The EM image is a stand-in (ones over the block the 13 landmarks span, on a coarse level of the 18x18x45 nm
    grid); what is checked is where it lands: every voxel it fills in the CCF grid maps back inside the EM block,
    the block's landmarks fall on filled voxels, and the block sits in hippocampal CA3.
    """
    from atlasreg import Grid, Volume

    em_uct, _, _, _, g = chain
    src = em_uct.src_points  # nm
    vs = np.array([18.0, 18.0, 45.0]) * np.array([256, 256, 128])  # a level of the EM pyramid, nm
    lo, hi = src.min(0) - vs, src.max(0) + vs
    shape = tuple(int(v) for v in np.ceil((hi - lo) / vs) + 1)
    em = Volume(np.ones(shape, np.uint8), vs, origin=lo, space=em_uct.src)
    assert em.space.unit == "nm"

    corners = em.index_to_physical(np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                                             for k in (0, shape[2] - 1)], float))
    ccf_corners = g.map_points(corners, "em", "ccf")
    step = 5.0  # µm
    c_lo = ccf_corners.min(0) - 4 * step
    c_shape = tuple(int(v) for v in np.ceil((ccf_corners.max(0) + 4 * step - c_lo) / step))
    ref = Grid(c_shape, (step, step, step), atlas.annotation.space, tuple(c_lo), np.eye(3))

    out = g.warp(em, "ccf", reference=ref, interpolation="nearest", fill=0)
    assert out.space.name == "ccf" and out.shape == c_shape
    filled = np.argwhere(out.numpy() > 0)
    assert len(filled) > 100
    # every filled CCF voxel maps back inside the EM block (half an EM voxel of slack for nearest-neighbour)
    back = em.physical_to_index(g.map_points(out.index_to_physical(filled.astype(float)), "ccf", "em"))
    assert np.all(back > -0.5 - 1e-6) and np.all(back < np.array(shape) - 0.5 + 1e-6)
    # the landmarks, carried point-wise, fall on filled voxels of the warped block
    idx = np.rint(out.physical_to_index(g.map_points(src, "em", "ccf"))).astype(int)
    assert np.all(out.numpy()[tuple(idx.T)] > 0)
    # and the block sits in CA3 (or its layers)
    onto = atlas.ontology
    ids = atlas.region_of(out.index_to_physical(filled.astype(float)), space="ccf")
    in_ca3 = np.array([i > 0 and (int(i) == 463 or 463 in onto.ancestors(int(i))) for i in ids[::7]])
    assert in_ca3.mean() > 0.5, in_ca3.mean()
