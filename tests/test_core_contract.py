"""The coordinate core's promises (issue 13 items 2-6): graph edges and paths, units as part of a
space's identity, warps within one space, fill values, mixed-unit chains in ITK files.

Every fixture is made in the test (no ATLASREG_DATA); ITK files are checked with SimpleITK itself.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atlasreg as ar
from atlasreg.errors import InputError, SpaceMismatchError
from atlasreg.spaces import Space, resolve_space
from atlasreg.transforms.field import DisplacementField


def _field(src="a", dst="b", unit="um", shape=(10, 10, 10), spacing=1.0, amp=1.0):
    idx = np.indices(shape, dtype=float)
    u = np.stack([amp * np.sin(idx[1] / 3), amp * np.cos(idx[2] / 4), amp * np.sin(idx[0] / 5)], -1)
    return DisplacementField(u, spacing=(spacing,) * 3, src=Space(src, unit), dst=Space(dst, unit))


# -- item 2: graph edges and paths ---------------------------------------------------------------------
def test_replacing_an_edge_replaces_its_lazy_reverse():
    g = ar.SpaceGraph()
    g.add(ar.Affine.from_translation([100, 0, 0], src="a", dst="b"))
    assert np.allclose(g.map_points([[0, 0, 0]], "b", "a"), [[-100, 0, 0]])  # resolves the reverse
    g.add(ar.Affine.from_translation([5, 0, 0], src="a", dst="b"))
    assert np.allclose(g.map_points([[0, 0, 0]], "a", "b"), [[5, 0, 0]])
    assert np.allclose(g.map_points([[0, 0, 0]], "b", "a"), [[-5, 0, 0]])


def test_an_explicit_reverse_edge_survives_replacing_the_forward_one():
    g = ar.SpaceGraph()
    g.add(ar.Affine.from_translation([100, 0, 0], src="a", dst="b"))
    g.add(ar.Affine.from_translation([-7, 0, 0], src="b", dst="a"))  # the user's own b -> a
    g.add(ar.Affine.from_translation([5, 0, 0], src="a", dst="b"))
    assert np.allclose(g.map_points([[0, 0, 0]], "b", "a"), [[-7, 0, 0]])


def test_path_avoids_numerical_inverses_before_counting_hops():
    g = ar.SpaceGraph()
    g.add(ar.Affine.from_translation([1, 0, 0], src="a", dst="b"))
    g.add(_field("d", "b"))  # b -> d only through the field's numerical inverse
    g.add(ar.Affine.from_translation([2, 0, 0], src="a", dst="c"))
    g.add(ar.Affine.from_translation([-1, 0, 0], src="c", dst="d"))
    # breadth-first search took a -> b -> d (found first); the all-exact route of the same length wins
    assert g.path("a", "d") == ["a", "c", "d"]
    assert np.allclose(g.map_points([[0.0, 0, 0]], "a", "d"), [[1, 0, 0]])
    # even a longer exact route beats a shorter numerical one
    h = ar.SpaceGraph([_field("d", "a")])
    h.add(ar.Affine.from_translation([1, 0, 0], src="a", dst="x"))
    h.add(ar.Affine.from_translation([1, 0, 0], src="x", dst="y"))
    h.add(ar.Affine.from_translation([1, 0, 0], src="y", dst="d"))
    assert h.path("a", "d") == ["a", "x", "y", "d"]
    assert h.path("d", "a") == ["d", "a"]  # the field itself is exact
    # with only a numerical route, it is taken
    assert ar.SpaceGraph([_field("d", "a")]).path("a", "d") == ["a", "d"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shifts=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=5))
def test_property_edge_replacement_keeps_both_directions_consistent(shifts):
    g = ar.SpaceGraph()
    for s in shifts:
        g.add(ar.Affine.from_translation([s, 0, 0], src="a", dst="b"))
        g.map_points([[0, 0, 0]], "b", "a")  # resolve (and cache) the reverse each time
    p = np.array([[1.0, 2, 3]])
    assert np.allclose(g.map_points(p, "a", "b"), p + [shifts[-1], 0, 0])
    assert np.allclose(g.map_points(p, "b", "a"), p - [shifts[-1], 0, 0])


# -- item 3: units are part of a space's identity ------------------------------------------------------------
def test_resolve_space_bare_name_takes_the_recorded_unit():
    assert resolve_space("em", Space("em", "nm")) == Space("em", "nm")
    assert resolve_space(Space("em", "um"), Space("em", "nm")) == Space("em", "um")
    assert resolve_space("ccf", None).orientation == "asr"  # a known space
    with pytest.raises(SpaceMismatchError):
        resolve_space(Space("x", "um", "asr"), Space("x", "um", "psl"))


def test_graph_map_points_converts_a_space_given_in_another_unit():
    g = ar.SpaceGraph([ar.Affine.from_translation([10, 0, 0], src=Space("em", "um"), dst=Space("lm", "um"))])
    # 1000 nm is 1 um: 1 + 10 = 11 um in lm (it returned 1010 when only names were compared)
    assert np.allclose(g.map_points([[1000.0, 0, 0]], src=Space("em", "nm"), dst="lm"), [[11, 0, 0]])
    assert np.allclose(g.map_points([[1.0, 0, 0]], src="em", dst=Space("lm", "nm")), [[11000, 0, 0]])
    assert np.allclose(g.map_points([[1000.0, 0, 0]], src=Space("em", "nm"), dst=Space("em", "um")), [[1, 0, 0]])


@settings(max_examples=30, deadline=None)
@given(unit=st.sampled_from(["nm", "um", "mm"]), other=st.sampled_from(["nm", "um", "mm"]),
       x=st.floats(-1e4, 1e4, allow_nan=False))
def test_property_units_never_silently_mismatch(unit, other, x):
    g = ar.SpaceGraph([ar.Affine.from_scale(2.0, src=Space("s", unit), dst=Space("t", unit))])
    out = g.map_points([[x, 0, 0]], src=Space("s", other), dst="t")
    assert np.allclose(out[0, 0], 2.0 * x * ar.spaces.unit_scale(other, unit), rtol=1e-12, atol=1e-9)


def test_warp_converts_a_volume_whose_space_has_another_unit():
    # the volume is in "em" nm; the transform's "em" is in um (it gave 990 non-fill voxels before)
    data = np.zeros((20, 20, 20), np.float32)
    data[5:15, 5:15, 5:15] = 1.0
    vol = ar.Volume(data, voxel_size=1000.0, space=Space("em", "nm"))  # 1 um voxels, in nm
    T = ar.Affine.from_translation([2.0, 0, 0], src=Space("em", "um"), dst=Space("lm", "um"))
    grid = ar.Grid((20, 20, 20), (1.0, 1.0, 1.0), Space("lm", "um"))
    out = ar.warp(vol, T, grid, interpolation="nearest")
    expect = np.zeros_like(data)
    expect[7:17, 5:15, 5:15] = 1.0
    assert np.array_equal(out.data, expect)
    # the graph does the same
    g = ar.SpaceGraph([T])
    assert np.array_equal(g.warp(vol, "lm", grid, interpolation="nearest").data, expect)


def test_load_transform_bare_names_keep_the_units_the_file_records(tmp_path):
    F = _field("em", "em2", unit="nm", spacing=1000.0, amp=500.0)
    T = ar.Sequence([F, ar.Affine.from_scale(1e-3, src=Space("em2", "nm"), dst=Space("lm", "um"))])
    for suffix in (".h5", ".json"):
        p = tmp_path / f"em_to_lm{suffix}"
        ar.save_transform(T, p)
        back = ar.load_transform(p, src="em", dst="lm")
        assert back.src.unit == "nm" and back.dst.unit == "um", suffix
        x = np.array([[3000.0, 4000, 5000]])
        assert np.allclose(back.map_points(x), T.map_points(x), atol=1e-6), suffix
        # an explicit space in another unit is converted (ITK) or refused (NGFF), never misread
        try:
            um = ar.load_transform(p, src=Space("em", "um"), dst="lm")
        except SpaceMismatchError:
            assert suffix == ".json"
        else:
            assert np.allclose(um.map_points(x * 1e-3), T.map_points(x), atol=1e-6), suffix


# -- item 4: a transform from a space to itself --------------------------------------------------------------
def test_warp_within_one_space_moves_the_image_like_any_other_transform():
    data = np.zeros((12, 12, 12), np.float32)
    data[3, 4, 5] = 1.0
    vol = ar.Volume(data, voxel_size=1.0, space="a")
    grid_a = ar.Grid((12, 12, 12), (1.0, 1.0, 1.0), Space("a"))
    grid_b = ar.Grid((12, 12, 12), (1.0, 1.0, 1.0), Space("b"))
    to_b = ar.warp(vol, ar.Affine.from_translation([2, 0, 0], src="a", dst="b"), grid_b, interpolation="nearest")
    to_a = ar.warp(vol, ar.Affine.from_translation([2, 0, 0], src="a", dst="a"), grid_a, interpolation="nearest")
    assert np.argwhere(to_b.data).tolist() == [[5, 4, 5]]
    assert np.argwhere(to_a.data).tolist() == [[5, 4, 5]]  # it moved to x - 2 before


# -- item 5: fill values -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fill", [-1, np.nan, 70000, 0.5])
@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_fill_the_output_dtype_cannot_hold_is_an_input_error(fill, interpolation):
    vol = ar.Volume(np.ones((6, 6, 6), np.uint16), space="a")
    T = ar.Affine.from_translation([3, 0, 0], src="a", dst="b")
    grid = ar.Grid((6, 6, 6), (1.0, 1.0, 1.0), Space("b"))
    with pytest.raises(InputError, match="fill"):
        ar.warp(vol, T, grid, interpolation=interpolation, fill=fill, dtype=np.uint16)


def test_nan_fill_into_a_float_output_of_integer_data_works():
    vol = ar.Volume(np.ones((6, 6, 6), np.uint16), space="a")
    T = ar.Affine.from_translation([3, 0, 0], src="a", dst="b")
    grid = ar.Grid((6, 6, 6), (1.0, 1.0, 1.0), Space("b"))
    out = ar.warp(vol, T, grid, interpolation="nearest", fill=np.nan, dtype=np.float32)
    assert np.isnan(out.data[:3]).all() and (out.data[3:] == 1).all()
    ok = ar.warp(vol, T, grid, interpolation="nearest", fill=65535)
    assert (ok.data[:3] == 65535).all()


# -- item 6: mixed-unit chains in ITK files -------------------------------------------------------------------
def test_mixed_unit_chain_in_an_itk_file_maps_as_simpleitk_reads_it(tmp_path):
    import SimpleITK as sitk

    F = _field("em", "em2", unit="nm", spacing=1000.0, amp=500.0)
    T = ar.Sequence([F, ar.Affine.from_scale(1e-3, src=Space("em2", "nm"), dst=Space("lm", "um"))])
    p = ar.save_transform(T, tmp_path / "em_to_lm.h5")
    x = np.array([[3000.0, 4000, 5000], [1234.0, 5678, 2345]])
    sitk_out = np.array([sitk.ReadTransform(str(p)).TransformPoint(tuple(map(float, q))) for q in x])
    assert np.allclose(sitk_out, T.map_points(x), atol=1e-6)  # nm in, um out, as map_points
    back = ar.load_transform(p)
    assert np.allclose(back.map_points(x), T.map_points(x), atol=1e-6)


# -- one home per job: the planner, the import layers -------------------------------------------------------
def test_blockwise_index_map_and_sequence_share_one_fusion_plan():
    from atlasreg.distributed.warp import IndexMap
    from atlasreg.transforms.base import fusion_plan

    F = _field("b", "c")
    A = ar.Affine.from_scale(2.0, src="a", dst="b")
    B = ar.Affine.from_translation([1, 0, 0], src="c", dst="d")
    C = ar.Affine.from_translation([0, 1, 0], src="d", dst="e")
    seq = ar.Sequence([A, F, B, C])
    plan = fusion_plan(seq.steps)
    assert [op[0] for op in plan] == ["fused"]
    assert np.allclose(plan[0][3], C.matrix @ B.matrix)
    g = np.eye(4)
    g[:3, 3] = [0.5, 0.5, 0.5]
    im = IndexMap(seq, g, np.eye(4))
    assert [op[0] for op in im.ops] == ["fused"]
    idx = im((0, 0, 0), (2, 3, 4))
    pts = np.indices((2, 3, 4)).reshape(3, -1).T + 0.5
    assert np.allclose(idx, seq.map_points(pts), equal_nan=True)


def test_transform_core_modules_import_downward_only():
    import ast
    import importlib

    def imports(mod):
        src = importlib.util.find_spec(mod).origin
        names = set()
        for node in ast.walk(ast.parse(open(src).read())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[-1])
        return names

    assert not {"field", "tps"} & imports("atlasreg.transforms.base")
    assert "base" not in imports("atlasreg.transforms.fitting")
    assert not {"field", "tps", "base"} & imports("atlasreg.transforms.inverse")


# -- properties of the core ----------------------------------------------------------------------------------
_codes = st.sampled_from(["psl", "asr", "ras", "lpi", "ipr", "sal", "rsa", "pil"])


@settings(max_examples=50, deadline=None)
@given(a=_codes, b=_codes, shape=st.tuples(*[st.integers(1, 40)] * 3),
       vs=st.tuples(*[st.floats(0.1, 50)] * 3), seed=st.integers(0, 2**31))
def test_property_reorientation_round_trips(a, b, shape, vs, seed):
    from atlasreg.spaces import orientation_mapping, reorient_points

    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, (20, 3)) * (np.array(shape) - 1) * np.array(vs)
    q = reorient_points(p, a, b, shape, vs)
    perm, _ = orientation_mapping(a, b)
    back = reorient_points(q, b, a, tuple(np.array(shape)[list(perm)]), tuple(np.array(vs)[list(perm)]))
    assert np.allclose(back, p, atol=1e-9 * max(1.0, np.abs(p).max()))
    # the volume's reorientation moves voxels exactly as its transform moves their centres
    vol = ar.Volume(np.arange(np.prod(shape)).reshape(shape), voxel_size=vs, orientation=a, space="s")
    r = vol.reorient(b)
    T = vol.reorient_transform(b)
    i = np.array([rng.integers(0, n) for n in shape])
    j = np.rint(r.physical_to_index(T.map_points(vol.index_to_physical(i[None]))))[0].astype(int)
    assert r.data[tuple(j)] == vol.data[tuple(i)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(angles=st.tuples(*[st.floats(-180, 180)] * 3), shift=st.tuples(*[st.floats(-100, 100)] * 3),
       scale=st.floats(0.2, 5.0), amp=st.floats(0.0, 1.5), seed=st.integers(0, 2**31))
def test_property_sequence_inverse_undoes_the_chain(angles, shift, scale, amp, seed):
    A = ar.Affine(ar.Affine.from_rotation(angles).matrix @ ar.Affine.from_scale(scale).matrix, "a", "b")
    F = _field("b", "c", shape=(30, 30, 30), amp=amp)  # |grad u| <= amp / 3: invertible
    B = ar.Sequence([ar.Affine.from_translation(shift, src="c", dst="c2"),
                     ar.Affine.from_units(Space("c2"), Space("d", "nm"))])
    T = ar.Sequence([A, F, B])
    rng = np.random.default_rng(seed)
    y_in = rng.uniform(8, 22, (50, 3))  # points inside the field's grid, in b
    x = A.inverse().map_points(y_in)
    y = T.map_points(x)
    back = T.inverse().map_points(y)
    ok = np.all(np.isfinite(back), axis=1)
    assert ok.all()
    assert np.allclose(back, x, atol=1e-5 * max(1.0, 1.0 / scale))


@settings(max_examples=30, deadline=None)
@given(u1=st.sampled_from(["nm", "um", "mm"]), u2=st.sampled_from(["nm", "um", "mm"]))
def test_property_a_space_declared_in_two_units_is_refused(u1, u2):
    g = ar.SpaceGraph([ar.Affine.identity(src=Space("em", u1), dst=Space("lm", u1))])
    other = ar.Affine.identity(src=Space("em", u2), dst=Space("x", u2))
    if u1 == u2:
        g.add(other)
        assert g.path("x", "lm") == ["x", "em", "lm"]
    else:
        with pytest.raises(SpaceMismatchError, match="one unit"):
            g.add(other)
        with pytest.raises(SpaceMismatchError):
            ar.Sequence([ar.Affine.identity(src="a", dst=Space("em", u1)), other])


def test_blockwise_warp_follows_the_same_fill_rule(tmp_path):
    from atlasreg.distributed import warp_blockwise

    vol = ar.Volume(np.ones((8, 8, 8), np.uint16), space="a")
    T = ar.Affine.from_translation([3, 0, 0], src="a", dst="b")
    grid = ar.Grid((8, 8, 8), (1.0, 1.0, 1.0), Space("b"))
    for bad in (-1, 0.5, np.nan):
        with pytest.raises(InputError, match="fill"):
            warp_blockwise(vol, T, grid, tmp_path / "bad.ome.zarr", interpolation="nearest", fill=bad, chunks=4,
                           levels=1, scheduler="sync", progress=False)
    res = warp_blockwise(vol, T, grid, tmp_path / "nan.ome.zarr", interpolation="nearest", fill=np.nan,
                         dtype=np.float32, chunks=4, levels=1, scheduler="sync", progress=False)
    mem = ar.warp(vol, T, grid, interpolation="nearest", fill=np.nan, dtype=np.float32)
    import zarr

    out = np.asarray(zarr.open_array(str(res.path / "0"), mode="r")[:])
    assert np.isnan(out[:3]).all() and np.array_equal(out, mem.data, equal_nan=True)
