"""Core transform classes: Affine, DisplacementField, ThinPlateSpline, Sequence, SpaceGraph, warp, Volume I/O."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

import atlasreg as ar
from atlasreg.errors import InputError, NoPathError, SpaceMismatchError
from atlasreg.transforms.field import DisplacementField, InverseDisplacementField


def smooth_field(shape=(40, 40, 40), spacing=2.0, src="a", dst="b", outside="nan"):
    """A smooth invertible field: a constant shift of about 5 voxels plus sines (|grad u| < 0.3)."""
    idx = np.indices(shape, dtype=np.float64)
    x = idx * spacing
    L = 160.0
    u = np.empty(shape + (3,))
    u[..., 0] = 8.0 + 6.0 * np.sin(2 * np.pi * x[1] / L) * np.cos(2 * np.pi * x[2] / L)
    u[..., 1] = -6.0 + 6.0 * np.sin(2 * np.pi * (x[0] + x[2]) / L)
    u[..., 2] = 4.0 + 6.0 * np.cos(2 * np.pi * x[0] / L)
    return DisplacementField(u, spacing=(spacing,) * 3, src=src, dst=dst, outside=outside)


# ---------------------------------------------------------------------------------------------
# DisplacementField
# ---------------------------------------------------------------------------------------------
def test_field_inverse_round_trip_below_a_hundredth_of_a_voxel():
    F = smooth_field()
    voxel = 2.0
    rng = np.random.default_rng(0)
    x = rng.uniform(22, 56, (5000, 3))
    y = F.map_points(x)
    shift = np.linalg.norm(y - x, axis=1)
    assert shift.min() >= 5 * voxel  # the criterion: displacements of 5 voxels and more
    Finv = F.inverse()
    assert isinstance(Finv, InverseDisplacementField)
    assert (Finv.src.name, Finv.dst.name) == ("b", "a")
    back = Finv.map_points(y)
    assert np.abs(back - x).max() < 0.01 * voxel
    assert Finv.last_residual < 0.01 * voxel
    # The other way round too, and the inverse of the inverse is the field itself.
    assert np.abs(F.map_points(Finv.map_points(x)) - x).max() < 0.01 * voxel
    assert Finv.inverse() is F


def test_field_trilinear_between_nodes_and_geometry():
    u = np.zeros((3, 3, 3, 3))
    u[1, 1, 1] = [4.0, 0, 0]
    R = ar.Affine.from_rotation([0, 0, 90]).matrix[:3, :3]
    F = DisplacementField(u, spacing=(2, 2, 2), origin=(10, 0, 0), direction=R, src="a", dst="b")
    node = F.grid_points().reshape(3, 3, 3, 3)[1, 1, 1]
    assert np.allclose(node, [10 - 2, 2, 2])  # origin + R @ (spacing * index)
    assert np.allclose(F.map_points(node), node + [4, 0, 0])
    # Half-way towards a neighbour node along array axis 0 (physical direction R[:, 0] = +y).
    half = node + 0.5 * 2 * R[:, 0]
    assert np.allclose(F.map_points(half), half + [2, 0, 0])


def test_nan_is_carried_for_points_leaving_a_field():
    F = smooth_field(outside="nan")
    A = ar.Affine.from_translation([1, 2, 3], src="b", dst="c")
    pts = np.array([[30.0, 30, 30], [-50.0, 30, 30], [30.0, 30, 500]])
    out = ar.Sequence([F, A]).map_points(pts)
    assert np.all(np.isfinite(out[0]))
    assert np.all(np.isnan(out[1:]))
    # NaN going in stays NaN through affines, fields and splines.
    rng = np.random.default_rng(1)
    s = rng.uniform(0, 50, (10, 3))
    tps = ar.ThinPlateSpline(s, s + 1.0, src="c", dst="d")
    assert np.all(np.isnan(ar.Sequence([F, A, tps]).map_points(pts)[1:]))
    # outside="zero" keeps such points where they are (ITK's behaviour).
    Z = smooth_field(outside="zero")
    assert np.allclose(Z.map_points(pts[1:]), pts[1:])


# ---------------------------------------------------------------------------------------------
# Thin-plate spline (real landmarks: Zheng CA3 micro-CT -> CCF)
# ---------------------------------------------------------------------------------------------
def test_tps_interpolates_landmarks_and_inverts(data_dir):
    tab = pd.read_csv(data_dir / "em_lm" / "zheng-ca3-uct-to-ccf.csv", index_col=0)
    src = tab[["x_uct", "y_uct", "z_uct"]].to_numpy(float)
    dst = tab[["x_ccf", "y_ccf", "z_ccf"]].to_numpy(float)
    T = ar.ThinPlateSpline(src, dst, src=ar.Space("uct", "um"), dst=ar.Space("ccf", "um", "asr"))
    assert np.abs(T.map_points(src) - dst).max() < 1e-6
    # The affine part alone leaves tens of µm: the spline really bends.
    A = ar.Affine.fit(src, dst, src="uct", dst="ccf")
    assert np.abs(A.map_points(src) - dst).max() > 10.0
    inv = T.inverse()
    assert np.abs(inv.map_points(dst) - src).max() < 1e-4
    rng = np.random.default_rng(2)
    lo, hi = src.min(0), src.max(0)
    x = rng.uniform(lo, hi, (500, 3))
    assert np.abs(inv.map_points(T.map_points(x)) - x).max() < 1e-4
    assert inv.last_residual < 1e-4


# ---------------------------------------------------------------------------------------------
# Sequence
# ---------------------------------------------------------------------------------------------
def test_sequence_folds_affines_and_fused_path_equals_steps():
    A = ar.Affine.from_rotation([10, 0, 5], src="p", dst="a", center=(40, 40, 40))
    F = smooth_field(src="a", dst="b")
    B = ar.Affine.from_scale([1.1, 0.9, 1.0], src="b", dst="c")
    C = ar.Affine.from_translation([5, -3, 2], src="c", dst="d")
    seq = ar.Sequence([A, F, B, C])
    simple = seq.simplified()
    assert [type(t).__name__ for t in simple] == ["Affine", "DisplacementField", "Affine"]
    assert np.allclose(simple[2].matrix, C.matrix @ B.matrix)
    assert (simple[2].src.name, simple[2].dst.name) == ("b", "d")
    rng = np.random.default_rng(4)
    x = rng.uniform(25, 55, (2000, 3))
    stepwise = C.map_points(B.map_points(F.map_points(A.map_points(x))))
    assert np.allclose(seq.map_points(x), stepwise, rtol=0, atol=1e-9)
    # Three affines in a row become one matrix.
    three = ar.Sequence([ar.Affine.from_translation([1, 0, 0], src="x", dst="y"),
                         ar.Affine.from_scale(2.0, src="y", dst="z"),
                         ar.Affine.from_translation([0, 1, 0], src="z", dst="w")])
    (only,) = three.simplified()
    assert np.allclose(only.map_points([[1.0, 1, 1]]), [[4, 3, 2]])
    # The inverse runs the steps backwards; a chain that does not link is refused.
    assert np.allclose(seq.inverse().map_points(seq.map_points(x)), x, atol=1e-6)
    with pytest.raises(SpaceMismatchError, match="'b'"):
        ar.Sequence([A, ar.Affine.identity("b", "c")])


# ---------------------------------------------------------------------------------------------
# SpaceGraph and a three-hop chain EM (nm) -> LM (µm, psl) -> LM (asr) -> atlas (µm, asr)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def chain_graph():
    em = ar.Space("em", "nm")
    lm = ar.Space("lm", "um", "psl")
    R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    em_to_lm = np.eye(4)
    em_to_lm[:3, :3] = R * 1e-3
    em_to_lm[:3, 3] = [1200, 800, 1500]
    lm_vol = ar.Volume(np.zeros((270, 193, 271), np.uint8), voxel_size=(50, 40, 40), space=lm)
    reo = lm_vol.reorient_transform("asr", space="lm_asr")
    ccf = ar.Space("ccf", "um", "asr")
    reg = ar.Affine(np.diag([0.95, 0.95, 0.95, 1.0]) + np.array([[0, 0, 0, 100], [0, 0, 0, -50],
                                                                  [0, 0, 0, 25], [0, 0, 0, 0]]),
                    reo.dst, ccf)
    g = ar.SpaceGraph([ar.Affine(em_to_lm, em, lm), reo, reg])
    return g, lm_vol


def test_three_hop_chain_against_hand_computed_values(chain_graph):
    g, lm_vol = chain_graph
    assert g.path("em", "ccf") == ["em", "lm", "lm_asr", "ccf"]
    p_em = np.array([[2000.0, 4000.0, 8000.0]])  # nm
    # em -> lm: rotate (x, y) -> (-y, x), nm -> µm, add the block's offset.
    p_lm = np.array([[-4.0 + 1200, 2.0 + 800, 8.0 + 1500]])
    # psl -> asr: axis 0 flips ((270-1)*50 - x), axis 1 stays superior-first, axis 2 flips ((271-1)*40 - z).
    p_asr = np.array([[269 * 50 - 1196.0, 802.0, 270 * 40 - 1508.0]])
    p_ccf = 0.95 * p_asr + [100, -50, 25]
    assert np.allclose(g.map_points(p_em, "em", "lm"), p_lm)
    assert np.allclose(g.map_points(p_em, "em", "lm_asr"), p_asr)
    assert np.allclose(g.map_points(p_em, "em", "ccf"), p_ccf)
    assert np.allclose(p_ccf, [[11741.3, 711.9, 8852.4]])
    assert np.allclose(g.map_points(p_ccf, "ccf", "em"), p_em)
    # The reorientation affine agrees with reorient_points and with the reoriented array.
    assert np.allclose(ar.reorient_points(p_lm, "psl", "asr", lm_vol.shape, lm_vol.voxel_size), p_asr)
    small = ar.Volume(np.arange(4 * 5 * 6).reshape(4, 5, 6), voxel_size=(50, 40, 40), space="s",
                      orientation="psl")
    r = small.reorient("asr")
    T = small.reorient_transform("asr")
    for idx in [(0, 0, 0), (3, 1, 2), (1, 4, 5)]:
        j = np.rint(r.physical_to_index(T.map_points(small.index_to_physical([idx])))[0]).astype(int)
        assert r.data[tuple(j)] == small.data[idx]


def test_graph_no_path_names_the_missing_link(chain_graph):
    g, _ = chain_graph
    g.add(ar.Affine.identity("other_a", "other_b"))
    with pytest.raises(NoPathError) as exc:
        g.map_points([[0.0, 0, 0]], "em", "other_b")
    msg = str(exc.value)
    assert "'em'" in msg and "'other_b'" in msg and "ccf" in msg
    with pytest.raises(NoPathError, match="not in the graph"):
        g.path("em", "nowhere")
    with pytest.raises(SpaceMismatchError, match="um"):
        g.add(ar.Affine.identity(ar.Space("em", "um"), "x"))


# ---------------------------------------------------------------------------------------------
# warp: direction, and one resampling through a chain
# ---------------------------------------------------------------------------------------------
def test_warp_direction_with_a_known_translation():
    data = np.zeros((12, 12, 12), np.float32)
    data[2, 3, 4] = 1.0
    v = ar.Volume(data, voxel_size=2.0, space="a")
    grid = ar.Grid((12, 12, 12), (2.0, 2.0, 2.0), ar.Space("b"))
    T = ar.Affine.from_translation([6.0, 0, 0], src="a", dst="b")  # +3 voxels along axis 0
    w = ar.warp(v, T, grid)
    assert w.space.name == "b"
    assert np.unravel_index(np.argmax(w.data), w.shape) == (5, 3, 4)
    # The same transform given the other way round (b -> a) warps the same: atlasreg picks the direction.
    w2 = ar.warp(v, T.inverse(), grid)
    assert np.array_equal(w.data, w2.data)
    with pytest.raises(SpaceMismatchError):
        ar.warp(v, ar.Affine.identity("x", "y"), grid)


def test_graph_warp_is_one_resampling_of_the_composed_chain():
    rng = np.random.default_rng(5)
    data = ndi.gaussian_filter(rng.normal(size=(40, 40, 40)), 2).astype(np.float32)
    v = ar.Volume(data, voxel_size=2.0, space="a")
    A = ar.Affine.from_rotation([0, 0, 8], src="a", dst="b", center=(40, 40, 40))
    F = smooth_field(src="b", dst="c", outside="nan")
    B = ar.Affine.from_translation([3.0, -2.0, 1.0], src="c", dst="d")
    g = ar.SpaceGraph([A, F, B])
    grid = ar.Grid((40, 40, 40), (2.0, 2.0, 2.0), ar.Space("d"))
    w = g.warp(v, "d", grid)
    composed = ar.warp(v, ar.Sequence([A, F, B]), grid)
    assert np.array_equal(w.data, composed.data)
    # By hand: pull every output voxel back step by step (d -> c -> b -> a), then sample once.
    p = grid.index_to_physical(np.indices(grid.shape).reshape(3, -1).T)
    q = A.inverse().map_points(F.inverse().map_points(B.inverse().map_points(p)))
    ok = np.all(np.isfinite(q), axis=1)
    idx = v.physical_to_index(q[ok])
    inside = np.all((idx >= 0) & (idx <= 39), axis=1)
    expect = ndi.map_coordinates(data, idx[inside].T, order=1)
    got = w.data.reshape(-1)[ok][inside]
    assert inside.sum() > 20000
    assert np.abs(got - expect).max() < 1e-4
    # Voxels whose pull-back leaves the field's grid get the fill value.
    assert np.all(w.data.reshape(-1)[~ok] == 0)


# ---------------------------------------------------------------------------------------------
# Volume exchange with SimpleITK and ANTs; bad units and codes
# ---------------------------------------------------------------------------------------------
def test_volume_to_sitk_and_ants_keep_voxel_positions():
    sitk = pytest.importorskip("SimpleITK")
    ants = pytest.importorskip("ants")
    D = ar.Affine.from_rotation([20, -10, 35]).matrix[:3, :3]
    data = np.random.default_rng(6).random((7, 8, 9)).astype(np.float32)
    v = ar.Volume(data, voxel_size=(2.0, 3.0, 4.0), origin=(10, -5, 3), direction=D, space="s")
    img, aimg = v.to_sitk(), v.to_ants()
    for idx in [(0, 0, 0), (6, 7, 8), (3, 1, 5)]:
        p = v.index_to_physical([idx])[0]
        assert np.allclose(img.TransformIndexToPhysicalPoint(idx), p)
        assert np.allclose(ants.transform_index_to_physical_point(aimg, idx), p)
        assert img[idx] == data[idx] and aimg.numpy()[idx] == data[idx]
    back = ar.Volume.from_sitk(img, space="s")
    assert np.allclose(back.affine, v.affine) and np.array_equal(back.data, data)
    back2 = ar.Volume.from_ants(aimg, space="s")
    assert np.allclose(back2.affine, v.affine) and np.array_equal(back2.data, data)


def test_unknown_unit_and_orientation_code_are_input_errors():
    with pytest.raises(InputError, match="unit"):
        ar.Space("x", "furlong")
    with pytest.raises(InputError, match="orientation"):
        ar.Space("x", "um", "pqz")
    with pytest.raises(InputError, match="orientation"):
        ar.Volume(np.zeros((2, 2, 2)), space="x", orientation="ppl")
    with pytest.raises(InputError, match="unit"):
        DisplacementField(np.zeros((2, 2, 2, 3)), src=ar.Space("a", "nm"), dst=ar.Space("b", "um"))


def test_large_calls_map_identically_in_any_order():
    """Big point sets are mapped block by block (cache-friendly): same numbers as the plain kernel."""
    from atlasreg import _kernels as K

    rng = np.random.default_rng(8)
    u = rng.normal(0, 3.0, (70, 60, 50, 3))  # 5 MB: above the size that triggers ordering
    R = ar.Affine.from_rotation([10, -5, 20]).matrix[:3, :3]
    pts = rng.uniform(-60, 260, (300_000, 3))  # random order, some off the grid
    pre = ar.Affine.from_rotation([3, 2, 1], src="p", dst="a", center=(100, 100, 100))
    post = ar.Affine.from_translation([1, 2, 3], src="b", dst="c")
    for layout in ("C", "ITK"):
        arr = u if layout == "C" else np.ascontiguousarray(u.transpose(2, 1, 0, 3)).transpose(2, 1, 0, 3)
        F = DisplacementField(arr, spacing=(3, 3.5, 4), origin=(5, -5, 0), direction=R, src="a", dst="b")
        assert F.displacement.flags.c_contiguous == (layout == "C")  # ITK's memory order is kept, not copied
        assert F.displacement.nbytes >= K.LOCAL_FIELD_BYTES and len(pts) >= K.LOCAL_MIN_POINTS
        got = ar.Sequence([pre, F, post]).map_points(pts)
        want = np.empty_like(pts)
        K.affine_field_affine(pts, pre.matrix[:3].copy(), np.ascontiguousarray(u),
                              F.physical_to_index[:3].copy(), post.matrix[:3].copy(), True, want)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        assert 0 < np.isnan(got[:, 0]).sum() < len(pts)
        assert np.array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def test_field_with_nan_or_inf_is_refused_in_every_layout():
    """The parallel finite check covers C order, ITK's order and strided views alike."""
    rng = np.random.default_rng(3)
    u = rng.normal(0, 1, (9, 8, 7, 3)).astype(np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        for where in ((0, 0, 0, 0), (8, 7, 6, 2), (4, 3, 2, 1)):
            v = u.copy()
            v[where] = bad
            itk_order = np.ascontiguousarray(v.transpose(2, 1, 0, 3)).transpose(2, 1, 0, 3)
            strided = np.repeat(v, 2, axis=0)[::2]  # a view with a gap between x-slices
            for arr in (v, itk_order, strided, v.astype(np.float64)):
                assert arr[where] != arr[where] or not np.isfinite(arr[where])
                with pytest.raises(InputError, match="NaN or inf"):
                    DisplacementField(arr, spacing=(1, 1, 1), src="a", dst="b")
    assert DisplacementField(u, src="a", dst="b").displacement is u
