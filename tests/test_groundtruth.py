"""The ground-truth task's variants (issue 15 §3): the public task is unchanged, the variants are what they say."""
import math

import numpy as np
import pytest

from benchmarks import groundtruth as gt

SP = (50.0, 40.0, 40.0)


@pytest.fixture()
def small(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASREG_CACHE", str(tmp_path))
    rng = np.random.default_rng(3)
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(rng.random((24, 20, 22)), 2).astype(np.float32)


def test_public_task_is_peers_md_construction(small):
    # PEERS.md, written out here independently of groundtruth.py: 8° in the plane of axes 1, 2, the scales, t
    task = gt.make_task(0, fixed=small, spacing=SP, n_points=200)
    a = math.radians(8.0)
    R = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    A = R @ np.diag([0.92, 1.05, 0.97])
    c = np.array(small.shape) * np.array(SP) / 2
    P = task.points
    want = (P - c) @ A.T + c + np.array([300.0, -200.0, 150.0]) + task.u(P)
    assert np.allclose(task.T(P), want)
    assert task.name == "0"
    from scipy import ndimage as ndi
    grid = tuple(math.ceil(n * s / 250.0) for n, s in zip(small.shape, SP))
    rng = np.random.default_rng(0)
    u0 = ndi.gaussian_filter(rng.standard_normal(grid), 3)
    assert np.allclose(task.coeffs[0] / task.coeffs[0].ravel()[0], u0 / u0.ravel()[0])


def test_random_affine_is_drawn_per_seed_within_bounds():
    seen = []
    for seed in range(10, 30):
        A, t = gt.affine_parts("random", seed)
        U, S, Vt = np.linalg.svd(A)
        # A = R diag(s): the singular values are the scales, R = A diag(1/s) a proper rotation of <= 10°
        R = U @ Vt
        angle = math.degrees(math.acos(np.clip((np.trace(R) - 1) / 2, -1, 1)))
        assert np.linalg.det(R) > 0 and angle <= 10.0 + 1e-9
        assert np.all((S >= 0.92 - 1e-9) & (S <= 1.08 + 1e-9)) and np.all(np.abs(t) <= 300.0)
        seen.append(A)
        assert np.allclose(gt.affine_parts("random", seed)[0], A)          # reproducible
    assert not np.allclose(seen[0], seen[1])                              # and different per seed
    # rotations are about arbitrary axes: not all in one coordinate plane
    axes = []
    for A in seen:
        U, S, Vt = np.linalg.svd(A)
        w, v = np.linalg.eig(U @ Vt)
        axes.append(np.real(v[:, np.argmin(np.abs(w - 1))]))
    assert np.ptp(np.abs(np.array(axes)), axis=0).min() > 0.3


def test_issue15_affine():
    A, t = gt.affine_parts("issue15")
    a = math.radians(9.6)
    assert np.allclose(A[1], [0, 1.01, 0]) and np.allclose(np.linalg.svd(A)[1], sorted([1.04, 1.01, 0.94])[::-1])
    assert np.allclose(np.abs(t), 150.0)
    assert np.isclose(A[0, 0], math.cos(a) * 1.04)


def test_variants_have_their_own_cache_and_exact_inverse(small, tmp_path):
    pub = gt.make_task(4, fixed=small, spacing=SP, n_points=300)
    rough = gt.make_task(4, fixed=small, spacing=SP, n_points=300, **gt.parse_case("rough:4")[1])
    assert rough.name == "rough:4" and rough.node_spacing == 150.0
    assert rough.coeffs.shape[1:] == tuple(math.ceil(n * s / 150.0) for n, s in zip(small.shape, SP))
    assert np.abs(rough.coeffs).max() == pytest.approx(250.0)
    files = sorted(p.name for p in tmp_path.glob("moving_seed4*.npy"))
    assert len(files) == 2 and not np.array_equal(pub.moving, rough.moving)
    again = gt.make_task(4, fixed=small, spacing=SP, n_points=300, **gt.parse_case("rough:4")[1])
    assert np.array_equal(again.moving, rough.moving)                    # served from its own cache file
    err = rough.errors(rough.T_inv, rough.T, by_edge=True)
    assert err["moving_to_fixed"]["median_um"] < 1e-2
    bins = err["moving_to_fixed"]["by_edge"]
    assert sum(b["n"] for b in bins) == len(rough.points)


def test_edge_distance_is_negative_outside_the_moving_image(small):
    task = gt.make_task(0, fixed=small, spacing=SP, n_points=300, affine="issue15")
    d = task.edge_distance()
    sp = np.array(SP)
    hi = (np.array(small.shape) - 0.5) * sp
    TP = task.T(task.points)
    outside = ((TP < -sp / 2) | (TP > hi)).any(axis=1)
    assert outside.any() and np.all(d[outside] < 0) and np.all(d[~outside] >= 0)


def test_parse_case_rejects_unknown():
    assert gt.parse_case("5") == (5, {})
    with pytest.raises(ValueError, match="CASE:SEED"):
        gt.parse_case("wobbly:3")
