"""Displacement fields larger than memory: lazy mapping, blockwise inversion and composition."""
from __future__ import annotations

import numpy as np
import pytest
import zarr

import atlasreg as ar
from atlasreg.distributed import (ChunkedDisplacementField, compose_fields, invert_field, open_field, sample_field,
                                  warp_blockwise)
from atlasreg.errors import InputError


def smooth_field(shape, amplitude, seed):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    u = np.stack([gaussian_filter(rng.standard_normal(shape), 2.5) for _ in range(3)], axis=-1)
    return u * (amplitude / np.abs(u).max())


GEOM = dict(spacing=(100.0, 80.0, 120.0), origin=(-300.0, 150.0, 40.0))


@pytest.fixture(scope="module")
def field():
    """A smooth, invertible field (max 180 µm on 80-120 µm nodes) in memory and as chunked zarr."""
    u = smooth_field((40, 34, 30), 180.0, seed=5)
    F = ar.DisplacementField(u, **GEOM, src="moving", dst="fixed")
    store = zarr.storage.MemoryStore()
    z = zarr.create_array(store, shape=u.shape, chunks=(8, 8, 8, 3), dtype="float64")
    z[:] = u
    # A tiny read budget forces the grouped (binned) reads as well as single-box reads.
    CF = ChunkedDisplacementField(z, **GEOM, src="moving", dst="fixed", max_read_voxels=4000, bin_voxels=10)
    return F, CF


def _points(n, seed):
    rng = np.random.default_rng(seed)
    lo = np.asarray(GEOM["origin"]) - 200
    hi = lo + np.array([40 * 100, 34 * 80, 30 * 120]) + 400
    return rng.uniform(lo, hi, (n, 3))  # some outside the grid: NaN, as the in-memory field says


def test_chunked_field_maps_like_the_in_memory_field(field):
    F, CF = field
    pts = _points(8000, 1)
    a, b = F.map_points(pts), CF.map_points(pts)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    assert 0 < np.isnan(a[:, 0]).sum() < len(pts) // 2
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-9)
    ai, bi = F.inverse().map_points(a[~np.isnan(a[:, 0])]), CF.inverse().map_points(a[~np.isnan(a[:, 0])])
    np.testing.assert_array_equal(np.isnan(ai), np.isnan(bi))
    np.testing.assert_allclose(bi, ai, rtol=0, atol=1e-6)
    np.testing.assert_allclose(bi[~np.isnan(bi[:, 0])], pts[~np.isnan(a[:, 0])][~np.isnan(bi[:, 0])], atol=1e-4)
    assert CF.max_displacement() == pytest.approx(F.max_displacement())


def test_blockwise_inverse_and_composition(field, tmp_path):
    F, CF = field
    # as to_field: nodes without an inverse stay NaN by default, or get the fill value chosen
    ref = F.inverse().to_field()
    assert ref.unknown_nodes > 0
    inv = invert_field(CF, tmp_path / "inv.zarr", chunks=9, progress=False)
    assert isinstance(inv, ChunkedDisplacementField) and (inv.src.name, inv.dst.name) == ("fixed", "moving")
    assert (inv.unknown_nodes, inv.filled_nodes) == (ref.unknown_nodes, 0)
    # float32 storage; NaN at the same nodes (assert_allclose compares NaN positions)
    np.testing.assert_allclose(inv.to_field().displacement, ref.displacement, atol=1e-4)
    assert inv.to_field().unknown_nodes == ref.unknown_nodes
    ref0 = F.inverse().to_field(fill="zero")
    inv_mem = invert_field(F, tmp_path / "inv_mem.zarr", chunks=16, dtype="float64", fill="zero")
    np.testing.assert_allclose(inv_mem.to_field().displacement, ref0.displacement, atol=1e-9)
    assert (inv_mem.unknown_nodes, inv_mem.filled_nodes) == (0, ref0.filled_nodes) and ref0.filled_nodes > 0
    meta = zarr.open_group(str(tmp_path / "inv_mem.zarr")).attrs["atlasreg"]
    assert (meta["fill"], meta["nan_nodes"], meta["unknown_nodes"]) == ("zero", ref0.filled_nodes, 0)
    # F then its inverse: the identity (to interpolation error) away from the grid's edges
    rng = np.random.default_rng(2)
    lo = np.asarray(GEOM["origin"]) + 500
    pts = rng.uniform(lo, lo + np.array([40 * 100, 34 * 80, 30 * 120]) - 1000, (5000, 3))
    there = F.map_points(pts)
    back = inv_mem.map_points(there)
    ok = np.isfinite(back[:, 0])
    assert ok.all()
    err = np.linalg.norm(back - pts, axis=1)  # a trilinear inverse field: close, not exact
    assert np.median(err) < 1.0 and err.max() < 8.0  # nodes 80-120 µm apart, |u| up to 180 µm
    # A chain (field, affine, second field) as ONE field on the first field's grid.
    A = ar.Affine.from_rotation([2, 3, -4], src="fixed", dst="fixed2", center=(2000, 1500, 1800))
    u2 = smooth_field((20, 18, 16), 90.0, seed=9)
    F2 = ar.DisplacementField(u2, spacing=(200, 160, 240), origin=(-400, 0, -100), src="fixed2", dst="atlas",
                              outside="zero")
    chain = ar.Sequence([ar.Affine.identity("moving", "m2"), ar.DisplacementField(F.displacement, **GEOM,
                                                                                    src="m2", dst="fixed"), A, F2])
    grid = ar.Grid(F.shape, tuple(F.spacing), ar.Space("moving"), tuple(F.origin))
    one = compose_fields(chain, grid, tmp_path / "chain.zarr", chunks=12, dtype="float64")
    nodes = F.grid_points()
    want = chain.map_points(nodes) - nodes
    np.testing.assert_allclose(one.to_field().displacement.reshape(-1, 3), want, atol=1e-9)
    meta = zarr.open_group(str(tmp_path / "chain.zarr")).attrs["atlasreg"]
    assert meta["status"] == "complete" and meta["nan_nodes"] == 0
    assert meta["max_displacement"] == pytest.approx(np.sqrt((want ** 2).sum(1)).max())


def test_warp_through_a_chunked_field_equals_in_memory(field, tmp_path):
    F, CF = field
    rng = np.random.default_rng(0)
    src = rng.integers(0, 1000, (40, 34, 30)).astype(np.uint16)
    vol = ar.Volume(src, voxel_size=GEOM["spacing"], origin=GEOM["origin"], space="moving")
    grid = ar.Grid((36, 30, 28), (105, 85, 118), ar.Space("fixed"), origin=(-250, 200, 60))
    for interp in ("nearest", "linear"):
        want = ar.warp(vol, F, grid, interpolation=interp).data  # pull-back: the numerical inverse
        got = warp_blockwise(vol, CF, grid, tmp_path / f"{interp}.ome.zarr", interpolation=interp, chunks=8)
        g = got.volume.numpy()
        if interp == "nearest":
            # Same voxels except where the inverse lands within ~1e-9 voxel of a rounding tie.
            assert np.mean(g != want) < 1e-3
        else:
            np.testing.assert_allclose(g, want, atol=1e-2)


def test_field_jobs_refuse_bad_input(field, tmp_path):
    F, CF = field
    grid = ar.Grid(F.shape, tuple(F.spacing), ar.Space("elsewhere"))
    with pytest.raises(InputError, match="source space"):
        sample_field(F, grid, tmp_path / "x.zarr")
    with pytest.raises(InputError, match=".zarr"):
        invert_field(F, tmp_path / "x.h5")
    with pytest.raises(InputError, match="within one unit"):
        sample_field(ar.Affine.from_units(ar.Space("a", "nm"), ar.Space("b", "um")),
                     ar.Grid((4, 4, 4), (1, 1, 1), ar.Space("a", "nm")), tmp_path / "x.zarr")
    with pytest.raises(InputError, match="displacement field"):
        invert_field(ar.Affine.identity("a", "b"), tmp_path / "x.zarr")
    with pytest.raises(InputError, match="shape"):
        ChunkedDisplacementField(np.zeros((4, 4, 4)), src="a", dst="b")
    # An unfinished field on disk is refused, not half-used.
    g = zarr.open_group(str(tmp_path / "half.zarr"), mode="w")
    g.create_array("displacement", shape=(4, 4, 4, 3), dtype="f4")
    g.attrs["atlasreg"] = {"kind": "atlasreg.displacement_field", "status": "incomplete"}
    with pytest.raises(InputError, match="not completely written"):
        open_field(tmp_path / "half.zarr")
    assert not (tmp_path / "x.zarr").exists()
    bad = np.zeros((6, 6, 6, 3))
    bad[3, 3, 3, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        ChunkedDisplacementField(bad, src="a", dst="b").map_points([[3.0, 3.0, 3.0]])


def _shift_field():
    """Everything moves +1 along axis 0 (8 x 4 x 4 nodes, 1 µm): the inverse's 16 nodes x = 0 have their
    preimage (x = -1) off the grid, so no inverse there; everywhere else it is exactly -1 along axis 0."""
    u = np.zeros((8, 4, 4, 3))
    u[..., 0] = 1.0
    return ar.DisplacementField(u, src="a", dst="b")


def test_blockwise_inverse_leaves_nodes_without_inverse_unknown(tmp_path):
    F = _shift_field()
    inv = invert_field(F, tmp_path / "inv.zarr", chunks=3, progress=False)
    for G in (inv, open_field(tmp_path / "inv.zarr")):  # the store, reopened
        # node x = 0 and the cell next to it are unknown (they were mapped with zero displacement before)
        got = G.map_points([[0.0, 1, 1], [0.5, 2, 1], [3.0, 1, 1], [6.5, 2.5, 0.5]])
        assert np.isnan(got[:2]).all()
        np.testing.assert_allclose(got[2:], [[2.0, 1, 1], [5.5, 2.5, 0.5]], atol=1e-6)
        assert G.allow_nan and (G.unknown_nodes, G.filled_nodes) == (16, 0)
        assert G.max_displacement() == pytest.approx(1.0)
        M = G.to_field()
        assert (M.unknown_nodes, M.filled_nodes) == (16, 0)
        unknown = np.zeros((8, 4, 4), bool)
        unknown[0] = True
        np.testing.assert_array_equal(np.isnan(M.displacement).any(-1), unknown)
        # no transform file can hold the unknown nodes
        with pytest.raises(InputError, match="16 of 128 nodes .* no known displacement"):
            ar.save_transform(M, tmp_path / "inv.nii.gz")
    meta = zarr.open_group(str(tmp_path / "inv.zarr")).attrs["atlasreg"]
    assert (meta["fill"], meta["nan_nodes"], meta["unknown_nodes"], meta["filled_nodes"]) == (None, 16, 16, 0)
    assert meta["max_displacement"] == pytest.approx(1.0)
    np.testing.assert_array_equal(inv.to_field().displacement, F.inverse().to_field().displacement)
    # the inverse of the stored inverse reads the unknown nodes too: NaN there, the shift elsewhere
    back = inv.inverse().map_points([[1.0, 1, 1], [5.0, 2, 2]])
    np.testing.assert_allclose(back, [[2.0, 1, 1], [6.0, 2, 2]], atol=1e-6)


@pytest.mark.parametrize("fill, value", [("zero", 0.0), (2.5, 2.5), (np.float32(-1), -1.0)])
def test_blockwise_inverse_fills_when_asked(tmp_path, fill, value):
    F = _shift_field()
    inv = invert_field(F, tmp_path / "inv.zarr", chunks=3, fill=fill, progress=False)
    meta = zarr.open_group(str(tmp_path / "inv.zarr")).attrs["atlasreg"]
    assert (meta["fill"], meta["nan_nodes"], meta["unknown_nodes"], meta["filled_nodes"]) == (
        fill if isinstance(fill, str) else value, 16, 0, 16)
    G = open_field(tmp_path / "inv.zarr")
    assert not G.allow_nan and (G.unknown_nodes, G.filled_nodes) == (0, 16)
    want = F.inverse().to_field(fill=fill)
    np.testing.assert_array_equal(G.to_field().displacement, want.displacement)
    np.testing.assert_allclose(G.map_points([[0.0, 1, 1]]), [[value, 1 + value, 1 + value]])
    assert G.to_field().filled_nodes == 16
    ar.save_transform(G.to_field(), tmp_path / "inv.nii.gz")  # NaN-free: it can be written


@pytest.mark.parametrize("fill", ["nan", "0", True, float("inf"), float("nan"), [0.0]])
def test_blockwise_fill_is_checked_like_to_field(tmp_path, fill):
    F = _shift_field()
    with pytest.raises(InputError) as lib:
        F.inverse().to_field(fill=fill)
    with pytest.raises(InputError) as blk:
        invert_field(F, tmp_path / "inv.zarr", fill=fill)
    assert str(blk.value) == str(lib.value) and "field 'fill'" in str(blk.value)
    with pytest.raises(InputError, match="field 'fill'"):
        compose_fields([F], ar.Grid(F.shape, (1, 1, 1), ar.Space("a")), tmp_path / "c.zarr", fill=fill)
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_resumed_field_job_keeps_the_counts_of_the_blocks_done_before(tmp_path):
    from test_distributed_warp import Flaky

    F = _shift_field()
    grid = ar.Grid(F.shape, (1, 1, 1), ar.Space("b"))
    out = tmp_path / "inv.zarr"
    # blocks of 3 nodes along axis 0: the unknown nodes x = 0 all lie in the first blocks, run first
    with pytest.raises(RuntimeError, match="worker died"):
        sample_field(Flaky(F.inverse(), fail_after=4), grid, out, chunks=3, fill="zero", scheduler="sync")
    assert not out.exists() and len(list((tmp_path / "inv.zarr.partial" / "done").iterdir())) == 4
    rerun = Flaky(F.inverse())
    G = sample_field(rerun, grid, out, chunks=3, fill="zero", scheduler="sync")
    assert rerun.calls == 3 * 2 * 2 - 4  # resumed: the 4 finished blocks were not recomputed
    assert (G.unknown_nodes, G.filled_nodes) == (0, 16)
    meta = zarr.open_group(str(out)).attrs["atlasreg"]
    assert (meta["nan_nodes"], meta["max_displacement"]) == (16, pytest.approx(1.0))


def test_stores_written_before_fill_read_as_zero_filled_and_bad_counts_are_refused(tmp_path):
    invert_field(_shift_field(), tmp_path / "inv.zarr", chunks=3, fill="zero", progress=False)
    g = zarr.open_group(str(tmp_path / "inv.zarr"), mode="r+")
    meta = dict(g.attrs["atlasreg"])
    for k in ("fill", "unknown_nodes", "filled_nodes"):  # as the blockwise inverse wrote them before
        del meta[k]
    g.attrs["atlasreg"] = meta
    G = open_field(tmp_path / "inv.zarr")
    assert not G.allow_nan and (G.unknown_nodes, G.filled_nodes) == (0, 16)
    g.attrs["atlasreg"] = {**meta, "unknown_nodes": "many"}
    with pytest.raises(InputError, match=r"inv.zarr: field 'unknown_nodes': .*count of nodes, got 'many'"):
        open_field(tmp_path / "inv.zarr")
