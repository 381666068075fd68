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
