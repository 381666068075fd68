"""Numerical inverses (issue 13 item 1): one damped-Newton solver for fields, splines and chunked fields.

Every fixture is made here (no ATLASREG_DATA). The fields have det(I + grad u) from 0.2 to 5, far past
the |grad u| < 1 that plain fixed-point iteration needs; points come back exact to ``tol``, or NaN and
counted, or (``on_fail="raise"``) a ConvergenceError.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atlasreg as ar
from atlasreg.errors import ConvergenceError, InputError
from atlasreg.transforms.field import DisplacementField, InverseDisplacementField
from atlasreg.transforms.tps import InverseThinPlateSpline, ThinPlateSpline


def tanh_field(a: float, n: int = 64, axis: int = 0, shape=None, outside: str = "nan") -> DisplacementField:
    """u_axis = a * 8 * tanh((x - 32) / 8): det J = 1 + a at the centre (a = 1.5: the issue's 12·tanh)."""
    shape = shape or (n, n, n)
    u = np.zeros(tuple(shape) + (3,))
    x = np.arange(shape[axis], dtype=float)
    prof = a * 8.0 * np.tanh((x - 32.0) / 8.0)
    sl = [None, None, None]
    sl[axis] = slice(None)
    u[..., axis] = prof[tuple(sl)]
    return DisplacementField(u, src="a", dst="b", outside=outside)


def test_the_issues_stretch_inverts_exactly():
    # u_x = 12 tanh((x - 32) / 8) on 64^3: a 2.5x local stretch. Fixed-point iteration returned points
    # 10.8 voxels wrong here, with no NaN and no warning.
    F = tanh_field(1.5)
    rng = np.random.default_rng(1)
    x = rng.uniform(4, 60, (20000, 3))
    y = F.map_points(x)
    inv = F.inverse()
    back = inv.map_points(y)
    assert np.all(np.isfinite(back))
    assert np.abs(back - x).max() < 1e-5
    rep = inv.last_report
    assert (rep.points, rep.converged, rep.failed, rep.outside) == (20000, 20000, 0, 0)
    assert rep.max_residual <= inv.tol and inv.last_residual == rep.max_residual
    # the residual reported is the one of the points returned, checked against the forward map
    assert np.abs(F.map_points(back) - y).max() <= inv.tol * 1.0001


@pytest.mark.parametrize("a", [-0.8, -0.5, 0.5, 1.5, 2.5, 4.0])  # det J at the centre: 0.2 ... 5
def test_inverse_accuracy_for_det_j_from_0_2_to_5(a):
    F = tanh_field(a, shape=(64, 6, 6), axis=0)
    x = np.column_stack([np.linspace(3, 60, 4001), np.full(4001, 2.5), np.full(4001, 2.0)])
    det = 1 + a / np.cosh((x[:, 0] - 32) / 8) ** 2
    assert det.min() >= 0.2 - 1e-9 and det.max() <= 5 + 1e-9
    y = F.map_points(x)
    back = F.inverse().map_points(y)
    assert np.abs(back - x).max() < 1e-5


def test_strong_rotation_in_a_field_inverts_and_the_other_way_round():
    # a swirl (each circle about the z axis turned by up to 100 degrees): a diffeomorphism with
    # |grad u| > 1, where fixed-point iteration diverges
    n = 48
    idx = np.indices((n, n, n), dtype=float).transpose(1, 2, 3, 0)
    c = idx - (n - 1) / 2
    r = np.hypot(c[..., 0], c[..., 1])
    ang = 1.75 * np.exp(-(r / 10.0) ** 2)
    u = np.zeros_like(idx)
    u[..., 0] = c[..., 0] * np.cos(ang) - c[..., 1] * np.sin(ang) - c[..., 0]
    u[..., 1] = c[..., 0] * np.sin(ang) + c[..., 1] * np.cos(ang) - c[..., 1]
    F = DisplacementField(u, src="a", dst="b")
    grad = np.abs(np.gradient(u[..., 0], axis=1)).max()
    assert grad > 1.0
    rng = np.random.default_rng(2)
    x = rng.uniform(8, 40, (5000, 3))
    y = F.map_points(x)
    inv = F.inverse()
    assert np.abs(inv.map_points(y) - x).max() < 1e-5
    # inverse then forward is the identity on the target side too
    assert np.abs(F.map_points(inv.map_points(x)) - x).max() < 1e-5


def test_points_without_a_preimage_in_the_grid_are_nan_and_counted_as_outside():
    u = np.zeros((20, 20, 20, 3))
    u[..., 0] = 5.0
    F = DisplacementField(u, src="a", dst="b")  # domain: index -0.5 .. 19.5
    inv = InverseDisplacementField(F, on_fail="raise")  # outside is not a failure: no error
    y = np.array([[2.0, 5, 5],       # preimage x = -3: off the grid
                  [10.0, 5, 5],      # preimage x = 5
                  [24.0, 5, 5]])     # preimage x = 19, on the grid although y is not
    out = inv.map_points(y)
    assert np.all(np.isnan(out[0]))
    assert np.allclose(out[1:], [[5, 5, 5], [19, 5, 5]])
    assert (inv.last_report.outside, inv.last_report.converged, inv.last_report.failed) == (1, 2, 0)


def test_on_fail_policy_nan_counts_and_raise_raises():
    F = tanh_field(1.5, shape=(64, 6, 6))
    x = np.column_stack([np.linspace(20, 44, 50), np.full(50, 2.0), np.full(50, 2.0)])
    y = F.map_points(x)
    lazy = InverseDisplacementField(F, max_iter=1)  # one Newton step cannot reach 1e-6 everywhere
    out = lazy.map_points(y)
    rep = lazy.last_report
    assert rep.failed > 0 and rep.failed + rep.converged == 50
    assert np.isnan(out).any(axis=1).sum() == rep.failed
    assert rep.worst_failed_residual > lazy.tol
    ok = np.all(np.isfinite(out), axis=1)
    assert np.abs(out[ok] - x[ok]).max() < 1e-5  # what is returned is right
    with pytest.raises(ConvergenceError, match="did not converge"):
        InverseDisplacementField(F, max_iter=1, on_fail="raise").map_points(y)
    with pytest.raises(InputError, match="on_fail"):
        InverseDisplacementField(F, on_fail="clip")


def bent_tps():
    """A spline through 300 landmarks with two strong local bends (det J down to 0.08, still positive)."""
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (300, 3))
    dst = src.copy()
    dst[:, 2] += 40 * np.exp(-((src[:, 0] - 50) / 15) ** 2)
    dst[:, 0] += 20 * np.exp(-((src[:, 1] - 50) / 15) ** 2)
    return ThinPlateSpline(src, dst, src="a", dst="b")


def test_tps_with_a_strong_smooth_bend_inverts_every_point():
    T = bent_tps()  # the old affine-corrected iteration left points here up to 0.007 units off, unflagged
    rng = np.random.default_rng(3)
    x = rng.uniform(5, 95, (2000, 3))
    assert np.linalg.det(T.jacobian(x)).min() > 0.05
    y = T.map_points(x)
    inv = T.inverse()
    assert isinstance(inv, InverseThinPlateSpline)
    back = inv.map_points(y)
    assert np.abs(back - x).max() < 1e-6
    assert inv.last_report.converged == 2000, inv.last_report
    assert inv.last_residual <= inv.tol


def test_tps_forward_jacobian_matches_finite_differences():
    # the solver's analytic Jacobian is the spline's: checked through Newton's quadratic convergence
    # above, and directly here against central differences of the forward map
    from atlasreg import _kernels as K

    for kernel in ("r", "r2logr", "r3"):
        g = np.linspace(0, 100, 5)
        src = np.array(np.meshgrid(g, g, g, indexing="ij")).reshape(3, -1).T
        dst = src + 10 * np.sin(src / 30.0)
        T = ThinPlateSpline(src, dst, kernel=kernel, src="a", dst="b")
        p = np.array([31.0, 47.0, 62.0])
        q = T.frame[:3, :3] @ p + T.frame[:3, 3]
        t = K.tps_point(q[0], q[1], q[2], T._q, T.weights, T.affine_coeffs, T._kernel_id, True)
        Jq = np.array(t[3:]).reshape(3, 3)
        J = Jq @ T.frame[:3, :3]
        assert np.allclose(J, T.jacobian(p[None], step=1e-4)[0], atol=1e-6)


def test_chunked_field_inverse_uses_the_same_solver():
    from atlasreg.distributed import ChunkedDisplacementField, ChunkedInverseDisplacementField

    F = tanh_field(1.5, shape=(64, 16, 16))
    C = ChunkedDisplacementField(F.displacement.astype(np.float64), src="a", dst="b", max_read_voxels=20_000,
                                 bin_voxels=8)
    x = np.column_stack([np.linspace(4, 60, 300), np.linspace(2, 13, 300), np.full(300, 7.0)])
    y = F.map_points(x)
    inv = C.inverse()
    assert isinstance(inv, ChunkedInverseDisplacementField)
    back = inv.map_points(y)
    assert np.abs(back - x).max() < 1e-5
    assert inv.last_report.converged == 300 and inv.last_report.points == 300


def test_graph_numerical_edge_uses_the_solver():
    F = tanh_field(1.5, shape=(64, 6, 6))
    g = ar.SpaceGraph([F])
    x = np.array([[30.0, 2, 2], [33.0, 3, 2]])
    assert np.abs(g.map_points(g.map_points(x, "a", "b"), "b", "a") - x).max() < 1e-5


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=st.floats(-0.8, 4.0), x0=st.floats(3.0, 60.0), y0=st.floats(0.0, 5.0))
def test_property_strong_stretches_invert_to_tolerance(a, x0, y0):
    F = tanh_field(a, shape=(64, 6, 6))
    x = np.array([[x0, y0, 2.5]])
    back = F.inverse().map_points(F.map_points(x))
    assert np.abs(back - x).max() < 1e-5


# -- sampling an inverse onto a grid: nodes without an inverse are never given a made-up displacement ------------

def _shift_field(shift=2.0, shape=(10, 5, 4)):
    """Everything moves +shift (grid spacing 1) along axis 0: node y's inverse is y - shift, off the grid
    (index < -0.5) for the first ceil(shift - 0.5) layers."""
    u = np.zeros(shape + (3,))
    u[..., 0] = shift
    return DisplacementField(u, src="a", dst="b")


def test_to_field_keeps_nan_where_the_preimage_leaves_the_grid():
    F = _shift_field()
    inv = F.inverse()
    G = inv.to_field()
    assert (G.src.name, G.dst.name) == ("b", "a")
    unknown = np.isnan(G.displacement).any(-1)
    assert G.unknown_nodes == 2 * 5 * 4 == unknown.sum() and unknown[:2].all() and not unknown[2:].any()
    np.testing.assert_allclose(G.displacement[2:], np.broadcast_to([-2.0, 0, 0], (8, 5, 4, 3)), atol=1e-9)
    assert inv.last_report.outside == 2 * 5 * 4
    # a point that interpolates from an unknown node is NaN; from known nodes only, exact
    pts = np.array([[0.0, 1, 1], [1.0, 2, 2], [1.5, 1, 1], [2.0, 1, 1], [2.25, 3, 3], [9.0, 4, 3]])
    out = G.map_points(pts)
    assert np.isnan(out[:3]).all()
    np.testing.assert_allclose(out[3:], pts[3:] - [2.0, 0, 0], atol=1e-9)
    # the old zero fill made node 0 map to itself: its true inverse, -2, is not on the field's grid
    assert G.max_displacement() == pytest.approx(2.0)


def test_a_field_with_unknown_nodes_inverts_to_nan_not_garbage():
    G = _shift_field().inverse().to_field()   # y -> y - 2 where y >= 2 (index); unknown below
    x = G.inverse().map_points([[3.0, 1, 1], [7.5, 2, 2], [0.5, 1, 1], [-0.4, 1, 1], [-1.5, 3, 2]])
    np.testing.assert_allclose(x[:2], [[5.0, 1, 1], [9.5, 2, 2]], atol=1e-6)
    # 0.5's preimage 2.5 is known, but the solver starts in the unknown cell: NaN (conservative) or exact
    assert np.isnan(x[2]).all() or np.allclose(x[2], [2.5, 1, 1], atol=1e-6)
    assert np.isnan(x[3:]).all()   # their preimages 1.6 and 0.5 lie where G is unknown


def test_to_field_fill_is_explicit_counted_and_checked():
    F = _shift_field()
    Z = F.inverse().to_field(fill="zero")
    assert Z.filled_nodes == 40 and Z.unknown_nodes == 0
    np.testing.assert_array_equal(Z.displacement[:2], 0.0)
    np.testing.assert_allclose(Z.map_points([[0.0, 1, 1]]), [[0.0, 1, 1]])  # ITK's rule, chosen knowingly
    C = F.inverse().to_field(fill=-2.0)
    np.testing.assert_allclose(C.displacement[:2], -2.0)
    assert C.filled_nodes == 40
    assert _shift_field(0.0).inverse().to_field(fill="zero").filled_nodes == 0
    for bad in ("nan", "Zero", np.nan, np.inf, True, [0, 0, 0]):
        with pytest.raises(InputError, match="fill must be") as e:
            F.inverse().to_field(fill=bad)
        assert e.value.field == "fill"


@pytest.mark.parametrize("suffix", [".nii.gz", ".h5", ".tfm", ".json"])
def test_a_field_with_unknown_nodes_is_not_saved(tmp_path, suffix):
    G = _shift_field().inverse().to_field()
    path = tmp_path / f"inv{suffix}"
    with pytest.raises(InputError, match=r"40 of 200 nodes .* no known displacement.*fill='zero'") as e:
        ar.save_transform(G, path)
    assert e.value.path == str(path) and e.value.field == "displacement"
    assert list(tmp_path.iterdir()) == []
    if suffix != ".nii.gz":  # inside a chain too (a NIfTI holds one field only)
        with pytest.raises(InputError, match="40 of 200 nodes"):
            ar.save_transform(ar.Sequence([ar.Affine.from_translation([1, 0, 0], "c", "b"), G]), path)
    # filled knowingly, it saves and reloads mapping points as in memory
    Z = _shift_field().inverse().to_field(fill="zero")
    p = ar.save_transform(Z, path)
    pts = np.array([[0.0, 1, 1], [4.5, 2, 2]])
    np.testing.assert_allclose(ar.load_transform(p, "b", "a", outside="zero" if suffix != ".json" else None)
                               .map_points(pts), Z.map_points(pts), atol=1e-6)


def test_nan_nodes_need_allow_nan_and_inf_is_always_refused():
    u = np.zeros((3, 3, 3, 3))
    u[1, 1, 1, 0] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        DisplacementField(u)
    F = DisplacementField(u, allow_nan=True)
    assert F.unknown_nodes == 1 and F.max_displacement() == 0.0
    assert np.isnan(F.map_points([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5]])).all()   # both interpolate from node 1,1,1
    np.testing.assert_array_equal(F.map_points([[0.0, 0.0, 0.0], [2.0, 0.0, 2.0]]), [[0, 0, 0], [2, 0, 2]])
    u[1, 1, 1, 0] = np.inf
    with pytest.raises(InputError, match="NaN or inf"):
        DisplacementField(u, allow_nan=True)
