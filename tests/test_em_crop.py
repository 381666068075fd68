"""The light-sheet crop of an EM block: geometry, either transform direction, units, nonlinear fits, bad input."""
from __future__ import annotations

import numpy as np
import pytest

import atlasreg as ar
from atlasreg.em import crop_lm
from atlasreg.errors import InputError

EM = ar.Space("em", "nm")
LM = ar.Space("lm", "um")


@pytest.fixture()
def lm():
    data = np.arange(60 * 70 * 80, dtype=np.float32).reshape(60, 70, 80)
    return ar.Volume(data, (2.0, 1.0, 1.0), origin=(-10.0, 5.0, 3.0), space=LM)


def _em_to_lm():
    # EM nm -> LM um: rotate 10 degrees in-plane, scale to um, shift into the LM volume
    R = ar.Affine.from_rotation([0, 0, 10]).matrix
    M = np.diag([1e-3, 1e-3, 1e-3, 1.0]) @ R
    M[:3, 3] = [20.0, 30.0, 35.0]
    return ar.Affine(M, EM, LM)


def test_crop_covers_the_mapped_block_with_true_geometry(lm):
    em = ar.Grid((30, 512, 512), (50.0, 40.0, 40.0), EM, origin=(0.0, 0.0, 0.0))
    T = _em_to_lm()
    c = crop_lm(em, lm, T, margin=2.0)
    # every crop voxel is the LM voxel at the same physical position
    idx = np.array([[0, 0, 0], [c.shape[0] - 1, 3, 7], [2, c.shape[1] - 1, c.shape[2] - 1]])
    p = c.index_to_physical(idx)
    j = np.rint(lm.physical_to_index(p)).astype(int)
    np.testing.assert_allclose(lm.index_to_physical(j), p, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(c.data)[tuple(idx.T)], lm.data[tuple(j.T)])
    assert c.space == LM and np.allclose(c.voxel_size, lm.voxel_size)
    # the mapped block (+margin) lies inside the crop's box, and the box is not much larger
    corners = np.array([[i, j, k] for i in (-0.5, 29.5) for j in (-0.5, 511.5) for k in (-0.5, 511.5)])
    q = T.map_points(em.index_to_physical(corners))
    lo, hi = c.grid.bounds()
    assert np.all(q.min(0) - 2.0 >= lo - c.voxel_size / 2 - 1e-9)
    assert np.all(q.max(0) + 2.0 <= hi + c.voxel_size / 2 + 1e-9)
    assert np.all((hi - lo) - (q.max(0) - q.min(0) + 4.0) <= 2 * c.voxel_size + 1e-9)
    # the reverse transform and a graph give the same crop
    for t in (T.inverse(), ar.SpaceGraph([T])):
        d = crop_lm(em, lm, t, margin=2.0)
        assert d.shape == c.shape and np.allclose(d.origin, c.origin)


def test_units_are_converted_and_lazy_data_stays_lazy(lm):
    import dask.array as da

    em_um = ar.Grid((30, 512, 512), (0.05, 0.04, 0.04), ar.Space("em", "um"))
    em_nm = ar.Grid((30, 512, 512), (50.0, 40.0, 40.0), EM)
    lazy = lm.with_data(da.from_array(np.asarray(lm.data), chunks=16))
    a = crop_lm(em_um, lazy, _em_to_lm(), margin=1.0)
    b = crop_lm(em_nm, lm, _em_to_lm(), margin=1.0)
    assert hasattr(a.data, "compute") and a.shape == b.shape and np.allclose(a.origin, b.origin)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_nonlinear_landmark_fit_bends_the_box(lm, data_dir):
    """A thin-plate fit on real MICrONS landmarks: the crop covers every lattice point the fit maps."""
    import pandas as pd

    df = pd.read_csv(data_dir / "em_lm" / "microns_em_2p_landmarks.csv").iloc[:200]
    em_nm = df[["em_x", "em_y", "em_z"]].to_numpy() * [4.0, 4.0, 40.0]
    lm_um = df[["lm_x", "lm_y", "lm_z"]].to_numpy() * 1000.0
    T = ar.fit_landmarks(em_nm, lm_um, model="tps", src=EM, dst=LM)
    lo, hi = em_nm.min(0), em_nm.max(0)
    vs = (hi - lo) / 40
    em = ar.Grid((40, 40, 40), tuple(vs), EM, origin=tuple(lo + vs / 2))
    q = T.map_points(em.index_to_physical(np.indices((40, 40, 40)).reshape(3, -1).T[::97]))
    shape = tuple(int(n) for n in np.ceil((q.max(0) - q.min(0) + 600) / 5.0))
    big = ar.Volume(np.zeros(shape, np.uint8), 5.0, origin=q.min(0) - 300, space=LM)
    c = crop_lm(em, big, T, margin=10.0)
    lo_c, hi_c = c.grid.bounds()
    assert np.all(q >= lo_c - 10) and np.all(q <= hi_c + 10)


def test_bad_input(lm):
    em = ar.Grid((30, 512, 512), (50.0, 40.0, 40.0), EM)
    other = ar.Affine(np.eye(4), ar.Space("sample", "um"), LM)
    with pytest.raises(InputError, match="do not chain"):
        crop_lm(em, lm, other)
    far = ar.Affine.from_translation([1e6, 0, 0], src=EM, dst=ar.Space("lm", "nm"))
    with pytest.raises(InputError, match="outside the light-sheet volume"):
        crop_lm(em, lm, far)
    with pytest.raises(InputError, match="margin"):
        crop_lm(em, lm, _em_to_lm(), margin=-1)
    with pytest.warns(UserWarning, match="clipped"):
        tall = ar.Grid((100, 512, 512), (50.0, 40.0, 40.0), EM)
        edge = ar.Affine.from_translation([-12.0, 5.0, 3.0], src=ar.Space("em_um", "um"), dst=LM)
        T = ar.Sequence([ar.Affine.from_units(EM, ar.Space("em_um", "um")), edge])
        c = crop_lm(tall, lm, T)
    assert tuple(int(v) for v in np.rint(lm.physical_to_index(c.origin[None])[0])) == (0, 0, 0)
