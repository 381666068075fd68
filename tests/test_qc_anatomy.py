"""Anatomy measures that need no landmarks (issue 15 §2), each on a case whose answer is known: the mid-sagittal
plane of a mirrored volume, the distance of label interfaces from a plane, surface distances of spheres, the
darkest-fraction threshold, region-volume agreement, and brainreg's downsampled grid mapped back to the sample."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from atlasreg.errors import InputError
from atlasreg.qc.metrics import dark_mask, label_interface, plane_distances, surface_distances, volume_agreement
from atlasreg.registration.symmetry import midsagittal_plane


def _reflect(shape, vs, normal, offset, g):
    """``g + g∘S`` for the reflection S about ``normal · x = offset``: exactly symmetric about that plane."""
    idx = np.indices(shape).reshape(3, -1).T * vs
    refl = idx - 2 * ((idx @ normal) - offset)[:, None] * normal
    gi = ndi.map_coordinates(g, (refl / vs).T, order=1, mode="nearest").reshape(shape)
    return g + gi


def test_midsagittal_plane_of_a_tilted_mirror_symmetric_volume():
    rng = np.random.default_rng(0)
    shape, vs = (40, 36, 44), np.array([50.0, 40.0, 40.0])
    g = ndi.gaussian_filter(rng.standard_normal(shape), 1.5)
    ang = np.radians(4.0)
    n = np.array([np.sin(ang), 0.0, np.cos(ang)])
    d = 20 * 40 + 13.0                                   # off the grid's middle (860 µm) and tilted 4°
    vol = _reflect(shape, vs, n, d, g)
    p = midsagittal_plane(vol, vs, lr_axis=2, working_spacing=40.0)
    assert np.degrees(np.arccos(abs(p["normal"] @ n))) < 0.5
    assert abs(p["offset"] - d) < 10.0                   # a quarter of a 40 µm voxel
    assert abs(p["tilt_deg"] - 4.0) < 0.5


def test_midsagittal_plane_of_the_real_brain_made_symmetric(data_dir):
    """The real sample's left part and its mirror image: symmetric about a known plane, real texture."""
    import tifffile

    a = tifffile.imread(data_dir / "lightsheet" / "brain_psl_50x40x40um.tif")[::3, ::3, ::3].astype(np.float32)
    left = a[:, :, :40]                                   # 40 of 91 columns (120 µm voxels)
    vol = np.concatenate([left, left[:, :, ::-1], np.full(a.shape[:2] + (7,), 5.0, np.float32)], axis=2)
    vs = (150.0, 120.0, 120.0)
    p = midsagittal_plane(vol, vs, lr_axis=2, working_spacing=240.0)
    assert abs(p["offset"] - 39.5 * 120.0) < 15.0         # between columns 39 and 40; an eighth of a voxel
    assert p["tilt_deg"] < 0.5


def test_midsagittal_plane_refuses_a_constant_image():
    with pytest.raises(InputError, match="constant"):
        midsagittal_plane(np.ones((8, 8, 8)), 1.0, lr_axis=2)


def test_label_interface_lies_on_the_split_and_measures_a_shift():
    vs = (50.0, 40.0, 40.0)
    hemi = np.ones((10, 8, 20), np.uint8)
    hemi[:, :, 10:] = 2                                   # split between columns 9 and 10: x2 = 380 µm
    brain = np.zeros(hemi.shape, bool)
    brain[2:8, 1:7, 3:17] = True
    pts = label_interface(hemi, 1, 2, vs, mask=brain)
    assert len(pts) == 6 * 6                              # one pair per (axis-0, axis-1) voxel inside the brain
    np.testing.assert_allclose(pts[:, 2], 380.0)
    np.testing.assert_allclose(plane_distances(pts, [0, 0, 1], 380.0), 0.0)
    shifted = np.roll(hemi, 3, axis=2)                    # the midline 3 voxels (120 µm) off
    d = plane_distances(label_interface(shifted, 1, 2, vs, mask=brain), [0, 0, 1], 380.0)
    np.testing.assert_allclose(d, 120.0)


def _ball(shape, centre, r, vs):
    idx = np.indices(shape).transpose(1, 2, 3, 0) * vs
    return np.linalg.norm(idx - centre, axis=-1) <= r


def test_surface_distances_of_concentric_spheres():
    vs = np.array([20.0, 20.0, 20.0])
    shape, c = (60, 60, 60), np.array([600.0, 600.0, 600.0])
    a, b = _ball(shape, c, 400.0, vs), _ball(shape, c, 300.0, vs)
    d = surface_distances(a, b, vs)
    assert abs(d["median"] - 100.0) <= 20.0               # radii differ by 100 µm, within a voxel
    assert d["p95"] < 130.0
    assert abs(d["dice"] - 2 * 300.0 ** 3 / (400.0 ** 3 + 300.0 ** 3)) < 0.02
    same = surface_distances(a, a, vs)
    assert same["median"] == 0.0 and same["p95"] == 0.0 and same["dice"] == 1.0


def test_surface_distances_need_two_masks_on_one_grid():
    with pytest.raises(InputError, match="one grid"):
        surface_distances(np.ones((4, 4, 4), bool), np.ones((4, 4, 5), bool), 1.0)
    with pytest.raises(InputError, match="non-empty"):
        surface_distances(np.zeros((4, 4, 4), bool), np.ones((4, 4, 4), bool), 1.0)


def test_dark_mask_finds_dark_structures_of_the_given_share():
    rng = np.random.default_rng(2)
    img = 100.0 + rng.normal(0, 2, (30, 30, 30))
    truth = np.zeros(img.shape, bool)
    truth[10:14, 8:20, 12:15] = True                      # a dark "ventricle": 144 voxels
    img[truth] = 40.0
    brain = np.zeros(img.shape, bool)
    brain[3:27, 3:27, 3:27] = True
    frac = truth.sum() / brain.sum()
    got = dark_mask(img, brain, frac)
    assert got.sum() == truth.sum() and np.array_equal(got, truth)
    assert not (dark_mask(img, brain, 0.5) & ~brain).any()
    with pytest.raises(InputError, match="fraction"):
        dark_mask(img, brain, 1.5)


def test_volume_agreement():
    ref = {"a": 1.0, "b": 2.0, "c": 4.0, "d": 8.0, "tiny": 0.001}
    r = volume_agreement({k: 1.5 * v for k, v in ref.items()}, ref, min_volume=0.01)
    assert r["n"] == 4 and r["pearson"] == pytest.approx(1.0) and r["spearman"] == pytest.approx(1.0)
    assert r["median_abs_rel_diff"] == pytest.approx(0.5) and r["median_rel_diff"] == pytest.approx(0.5)
    with pytest.raises(InputError, match="in common"):
        volume_agreement({"x": 1.0}, ref)


def test_brainreg_grid_maps_back_onto_the_sample():
    """brainreg's downsampling (skimage rescale = scipy zoom with grid_mode=True per plane, scipy zoom along
    stored axis 0) and reorientation, done here with scipy, then mapped back: each sample voxel gets its own
    coordinates back to within half a downsampled voxel."""
    from benchmarks.bench_realdata import brainreg_to_sample
    from benchmarks.peers import _to_target

    shape, vs, atlas_um = (27, 19, 23), np.array([50.0, 40.0, 40.0]), 25.0
    scale = vs / atlas_um
    coords = np.indices(shape).astype(np.float64)          # a volume holding its own index, per axis
    got = []
    for ax in range(3):
        v = coords[ax]
        planes = ndi.zoom(v, (1.0, scale[1], scale[2]), order=1, mode="grid-constant", grid_mode=True)
        # skimage's output shape is round(n * scale); zoom agrees for these sizes
        assert planes.shape[1:] == tuple(int(round(n * s)) for n, s in zip(shape[1:], scale[1:]))
        down = ndi.zoom(planes, (scale[0], 1.0, 1.0), order=1)
        down_asr = _to_target(down, "psl", "asr")
        got.append(brainreg_to_sample(down_asr, shape))
    got = np.stack(got)
    inner = (slice(1, -1),) * 3                             # zoom's edge voxels see the constant border
    err_vox = np.abs(got - coords)[(slice(None), *inner)]
    # half a downsampled voxel, in sample voxels: 0.5 * 25/50 and 0.5 * 25/40 (+ interpolation slack)
    assert err_vox[0].max() <= 0.5 * atlas_um / vs[0] + 0.05
    assert err_vox[1].max() <= 0.5 * atlas_um / vs[1] + 0.05
    assert err_vox[2].max() <= 0.5 * atlas_um / vs[2] + 0.05


def test_boundary_figure_one_plane_per_row_is_as_wide_as_the_figure():
    """The report's layout at 25 µm: each plane gets the figure's full width (3 side by side gave < 2 px/voxel)."""
    from atlasreg import qc

    lab = np.zeros((30, 20, 40), np.int32)
    lab[5:25, 4:16, 8:30] = 1
    lab[10:20, 6:12, 12:20] = 2
    img = lab.astype(np.float32)
    row = qc.boundary_slices(img, lab, level="leaves")
    col = qc.boundary_slices(img, lab, level="leaves", ncols=1, panel_size=(13.0, 8.0))
    assert col.get_size_inches()[0] == 13.0 and col.get_size_inches()[1] == 24.0
    shown = [ax for ax in col.axes if ax.images]
    assert len(shown) == 3
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(col).draw()
    FigureCanvasAgg(row).draw()
    w_col = [ax.get_window_extent().width / col.dpi for ax in shown]
    w_row = [ax.get_window_extent().width / row.dpi for ax in row.axes]
    assert max(w_col) > 2 * max(w_row) / 1.5                # far wider panels than side by side
    with pytest.raises(InputError, match="ncols"):
        qc.boundary_slices(img, lab, ncols=4)
