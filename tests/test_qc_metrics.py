"""QC numbers: TRE, Dice, Jacobian determinant / folding, similarity — on known answers and real data."""
from __future__ import annotations

import numpy as np
import pytest

from atlasreg import Affine, DisplacementField, Grid, InputError, Sequence, Space, Volume
from atlasreg.qc import (dice, folding_fraction, jacobian_determinant, mutual_information, ncc, point_errors,
                         tre)


@pytest.fixture(scope="module")
def ccf200(data_dir):
    z = np.load(data_dir / "atlas" / "allen_mouse_200um.npz")
    return z["reference"], z["annotation"]


def test_tre_summary_and_unmapped_points():
    truth = np.zeros((5, 3))
    pred = np.array([[3, 4, 0], [0, 0, 1], [0, 2, 0], [np.nan, 0, 0], [0, 0, 0]], float)
    s = tre(pred, truth)
    assert s["n"] == 5 and s["n_unmapped"] == 1
    assert s["max"] == 5.0 and s["median"] == pytest.approx(1.5) and s["mean"] == pytest.approx(2.0)
    assert s["rms"] == pytest.approx(np.sqrt((25 + 1 + 4) / 4))
    np.testing.assert_allclose(point_errors(pred[:3], truth[:3]), [5, 1, 2])
    with pytest.raises(InputError):
        tre(pred[:2], truth)


def test_tre_of_real_landmark_fit(data_dir):
    """The Zheng µCT -> CCF pairs: a least-squares affine leaves tens of µm (README: about 66)."""
    import pandas as pd

    t = pd.read_csv(data_dir / "em_lm" / "zheng-ca3-uct-to-ccf.csv")
    src = t[["x_uct", "y_uct", "z_uct"]].to_numpy()
    dst = t[["x_ccf", "y_ccf", "z_ccf"]].to_numpy()
    A = Affine.fit(src, dst, "affine", "uct", "ccf")
    s = tre(A.map_points(src), dst)
    assert 10 < s["mean"] < 150 and s["max"] >= s["p95"] >= s["median"] > 0
    assert tre(dst, dst)["max"] == 0.0


def test_dice_known_overlap_and_real_annotation(ccf200):
    a = np.zeros((6, 6, 6), np.int32)
    b = np.zeros_like(a)
    a[:2], b[:3] = 1, 1
    a[4:], b[5:] = 7, 7
    d = dice(a, b)
    assert d[1] == pytest.approx(2 * 72 / (72 + 108)) and d[7] == pytest.approx(2 * 36 / (72 + 36))
    assert np.isnan(dice(a, b, labels=[3])[3])
    _, ann = ccf200
    same = dice(ann, ann)
    assert len(same) > 100 and all(v == 1.0 for v in same.values())
    shifted = dice(ann, np.roll(ann, 1, axis=0))
    vals = np.array(list(shifted.values()))
    assert 0.2 < np.nanmedian(vals) < 0.99  # one 200 µm voxel of shift hurts small regions most


def test_dice_rejects_interpolated_labels():
    a = np.zeros((3, 3, 3))
    a[0, 0, 0] = 2.5
    with pytest.raises(InputError, match="nearest"):
        dice(a, a)


def test_jacobian_of_affines_and_unit_change():
    g = Grid((6, 7, 8), (2.0, 3.0, 4.0), Space("a"), origin=(5, -3, 1))
    T = Sequence([Affine.from_rotation((10, 20, 30), "a", "b"), Affine.from_scale((2, 1, 1.5), "b", "c")])
    np.testing.assert_allclose(jacobian_determinant(T, g), 3.0, rtol=1e-9)
    nm_um = Affine.from_units(Space("a", "um"), Space("a_nm", "nm"))  # 1000x the numbers, same volume
    np.testing.assert_allclose(jacobian_determinant(nm_um, g), 1.0, rtol=1e-9)
    with pytest.raises(InputError, match="space"):
        jacobian_determinant(Affine.identity("b", "c"), g)


def test_jacobian_of_a_field_matches_the_analytic_value_and_finds_folds():
    # u_0 = 30 sin(x0 / 20): det J = 1 + 1.5 cos(x0 / 20), negative where cos < -2/3.
    shape, sp = (64, 5, 6), 2.0
    x0 = np.arange(shape[0]) * sp
    u = np.zeros(shape + (3,))
    u[..., 0] = (30 * np.sin(x0 / 20))[:, None, None]
    F = DisplacementField(u, spacing=(sp,) * 3, src="a", dst="b")
    g = Grid(shape, (sp,) * 3, Space("a"))
    det = jacobian_determinant(F, g, block_voxels=60)  # several slabs: halo rows must be right
    expect = 1 + 1.5 * np.cos(x0 / 20)
    np.testing.assert_allclose(det[2:-2, 2, 2], expect[2:-2], atol=0.02)
    frac = folding_fraction(det)
    assert frac == pytest.approx(np.mean(expect <= 0), abs=0.05) and frac > 0.1
    assert folding_fraction(np.ones(10)) == 0.0
    assert np.isnan(folding_fraction(np.full(4, np.nan)))
    assert folding_fraction(det, mask=det > 0) == 0.0


def test_similarity_on_real_lightsheet(data_dir):
    import tifffile

    img = tifffile.imread(data_dir / "lightsheet" / "brain_psl_50x40x40um.tif")[::3, ::3, ::3].astype(float)
    assert ncc(img, 2.5 * img + 7) == pytest.approx(1.0)
    assert ncc(img, -img) == pytest.approx(-1.0)
    moved = np.roll(img, 4, axis=0)
    assert ncc(img, img) > ncc(img, moved) > 0
    mi_same, mi_moved = mutual_information(img, img), mutual_information(img, moved)
    assert mi_same > mi_moved > 0
    nmi = mutual_information(img, img, normalized=True)
    assert nmi == pytest.approx(2.0, abs=1e-9)
    v = Volume(img, 150.0)
    assert ncc(v, v, mask=img > np.percentile(img, 50)) == pytest.approx(1.0)
    with pytest.raises(InputError):
        ncc(img, img[1:])
