"""Spaces, units and orientation codes: the coordinate contract (CONVENTIONS.md)."""
import itertools

import numpy as np
import pytest

import atlasreg as ar
from atlasreg.errors import InputError
from atlasreg.spaces import orientation_mapping, validate_orientation

ALL_CODES = ["".join(p) for letters in itertools.product("ap", "si", "lr")
             for p in itertools.permutations(letters)]


def test_there_are_48_orientation_codes():
    assert len(set(ALL_CODES)) == 48
    for c in ALL_CODES:
        assert validate_orientation(c.upper()) == c


def test_side_words_one_table_for_every_reader():
    """The side names every reader and message uses (NGFF RFC-4 axes, BrainGlobe 3, MouseLight, extent's
    messages), against what the orientation codes and ITK's direction matrices state."""
    from atlasreg.spaces import (anatomical_axis, letter_of_rfc4, lps_direction, opposite_side, rfc4_orientation,
                                 side_letter, side_name)

    lps_side = {(0, 1.0): "r", (0, -1.0): "l", (1, 1.0): "a", (1, -1.0): "p", (2, 1.0): "i", (2, -1.0): "s"}
    for code in ALL_CODES:
        D = lps_direction(code)
        for j, ch in enumerate(code):
            # axis j runs from the side ch names: its direction column points away from that side
            row = int(np.argmax(np.abs(D[:, j])))
            assert lps_side[(row, float(np.sign(D[row, j])))] == ch
            assert rfc4_orientation(ch) == f"{side_name(ch)}-to-{side_name(opposite_side(ch))}"
            assert letter_of_rfc4(rfc4_orientation(ch)) == ch
            assert side_letter(side_name(ch).upper()) == ch
        assert sorted(anatomical_axis(ch) for ch in code) == [0, 1, 2]
    assert [anatomical_axis(ch) for ch in "asr"] == [0, 1, 2]  # the CCF's own axis order
    assert (letter_of_rfc4("dorsal-to-ventral"), letter_of_rfc4("ventral-to-dorsal")) == ("s", "i")
    assert (side_name("s", dorsal_ventral=True), side_name("i", dorsal_ventral=True)) == ("dorsal", "ventral")
    for bad in ("anterior-to-left", "anterior", "left-to-left", "rostral-to-caudal", ""):
        assert letter_of_rfc4(bad) is None, bad


@pytest.mark.parametrize("unit,alias", [("um", "µm"), ("um", "microns"), ("nm", "nanometers"), ("mm", "MM")])
def test_unit_aliases(unit, alias):
    assert ar.Space("s", alias).unit == unit


def test_unit_scale_is_exact():
    assert ar.unit_scale("nm", "um") == 1e-3
    assert ar.unit_scale("mm", "um") == 1e3
    assert ar.unit_scale("nm", "mm") == 1e-6
    assert ar.unit_scale("um", "um") == 1.0


@pytest.mark.parametrize("bad", ["furlong", "", "m", None])
def test_unknown_unit_is_a_clear_error(bad):
    with pytest.raises(InputError, match="unknown unit"):
        ar.Space("s", bad)


@pytest.mark.parametrize("bad", ["pal", "ps", "xyz", "ppl", "aps"])
def test_bad_orientation_code_is_a_clear_error(bad):
    with pytest.raises(InputError, match="orientation code"):
        ar.Space("s", "um", bad)


def test_origin_and_nifti_codes():
    # CONVENTIONS: psl (origin) == AIR (points toward)
    assert ar.origin_to_nifti("psl") == "AIR"
    assert ar.nifti_to_origin("AIR") == "psl"
    assert ar.origin_to_nifti("asr") == "PIL"
    for c in ALL_CODES:
        assert ar.nifti_to_origin(ar.origin_to_nifti(c)) == c


def test_worked_example_of_conventions():
    # TIFF (270, 193, 271), voxel (50, 40, 40) um, psl: voxel (10, 0, 5) is at (500, 0, 200) um.
    v = ar.Volume(np.zeros((270, 193, 271), np.uint8), voxel_size=(50, 40, 40), orientation="psl", space="sample")
    np.testing.assert_array_equal(v.index_to_physical([[10, 0, 5]]), [[500, 0, 200]])
    np.testing.assert_allclose(v.physical_to_index([[500, 0, 200]]), [[10, 0, 5]])


def test_flip_keeps_voxel_centres():
    # Flipping an axis of n voxels with spacing s maps x to (n - 1) * s - x.
    pts = np.array([[0.0, 0, 0], [(270 - 1) * 50.0, 0, 0]])
    out = ar.reorient_points(pts, "psl", "asl", (270, 193, 271), (50, 40, 40))
    np.testing.assert_allclose(out[:, 0], [(270 - 1) * 50.0, 0.0])


@pytest.mark.parametrize("dst", ["asr", "ial", "rsa", "lpi", "psl"])
def test_reorient_volume_and_points_agree(dst):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, size=(6, 5, 4)).astype(np.uint16)
    v = ar.Volume(data, voxel_size=(50, 40, 30), orientation="psl", space="sample")
    w = v.reorient(dst)
    T = v.reorient_transform(dst)
    assert T.dst.name == w.space.name and w.orientation == dst
    idx = np.array([[i, j, k] for i in range(6) for j in range(5) for k in range(4)], float)
    p_old = v.index_to_physical(idx)
    p_new = T.map_points(p_old)
    # same as the pure point helper
    np.testing.assert_allclose(p_new, ar.reorient_points(p_old, "psl", dst, v.shape, v.voxel_size), atol=1e-9)
    new_idx = np.rint(w.physical_to_index(p_new)).astype(int)
    np.testing.assert_array_equal(w.data[tuple(new_idx.T)], data[tuple(idx.astype(int).T)])
    # and back
    back = w.reorient("psl", space="sample_back")
    np.testing.assert_array_equal(back.data, data)


def test_orientation_mapping_identity():
    assert orientation_mapping("asr", "asr") == ((0, 1, 2), (False, False, False))


# -- as_voxel_size: the one voxel-size check -----------------------------------------------------------------

@pytest.mark.parametrize("given,want", [
    (25, [25, 25, 25]), (0.5, [0.5] * 3), (np.float32(2), [2, 2, 2]), ([7], [7, 7, 7]),
    ((50, 40, 40), [50, 40, 40]), (np.array([4.0, 4.0, 40.0]), [4, 4, 40]), ([1, 2.5, 3], [1, 2.5, 3])])
def test_as_voxel_size_accepts_one_or_three_positive_numbers(given, want):
    from atlasreg.spaces import as_voxel_size

    vs = as_voxel_size(given)
    assert vs.dtype == np.float64 and vs.shape == (3,) and vs.flags.writeable
    np.testing.assert_array_equal(vs, want)


def test_as_voxel_size_returns_a_copy_and_other_ndim():
    from atlasreg.spaces import as_voxel_size

    given = np.array([1.0, 2.0, 3.0])
    as_voxel_size(given)[0] = 99
    assert given[0] == 1.0
    np.testing.assert_array_equal(as_voxel_size(3, ndim=2), [3, 3])
    np.testing.assert_array_equal(as_voxel_size((3, 4), ndim=2), [3, 4])


@pytest.mark.parametrize("bad", [
    0, -25, np.nan, np.inf, (50, 0, 40), (50, -40, 40), (np.nan, 40, 40), (50, np.inf, 40),  # not finite and > 0
    (50, 40), (1, 2, 3, 4), [], [[1, 2, 3]], np.ones((3, 1)),                                  # wrong length / shape
    "fifty", "25", ("50", "40", "40"), b"1", True, (True, 1, 1), None, {"x": 1}, [1, [2], 3], 1 + 2j])  # not numbers
def test_as_voxel_size_refuses_anything_else_naming_file_field_and_value(bad):
    from atlasreg.spaces import as_voxel_size

    with pytest.raises(InputError, match="voxel size must be") as e:
        as_voxel_size(bad, path="/data/brain.tif", field="src_voxel_size")
    assert e.value.path == "/data/brain.tif" and e.value.field == "src_voxel_size"
    assert str(e.value).startswith("/data/brain.tif: field 'src_voxel_size': ")
    assert repr(bad.tolist() if isinstance(bad, np.ndarray) else bad) in str(e.value)


def _callers(tmp_path):
    """Each function that takes a voxel size, as ``call(bad_voxel_size)``, with the field it must name."""
    from atlasreg.em import synthetic_lm_pair
    from atlasreg.em.pyramid import pyramid_factors
    from atlasreg.io.landmarks import read_landmarks
    from atlasreg.qc.metrics import label_interface, surface_distances
    from atlasreg.registration.symmetry import midsagittal_plane
    from atlasreg.tracings import read_swc, read_table

    swc = tmp_path / "n.swc"
    swc.write_text("1 1 0 0 0 1 -1\n2 3 1 1 1 1 1\n")
    table = tmp_path / "t.csv"
    table.write_text("x,y,z\n1,2,3\n")
    lm = tmp_path / "lm.csv"
    lm.write_text("name,x_src,y_src,z_src,x_dst,y_dst,z_dst\n" + "".join(
        f"p{i},{i},{i * i},{i % 3},{i},{i * i},{i % 3}\n" for i in range(6)))
    lab = np.ones((2, 1, 4), int)
    lab[..., 2:] = 2
    img = np.zeros((8, 8, 8), np.float32)
    img[2:6, 2:6, 1:7] = 1
    import tifffile

    tif = tmp_path / "v.tif"
    tifffile.imwrite(tif, img)
    em = ar.Volume(img, (50, 4, 4), space=ar.Space("em", "nm"))
    return {
        "Volume": (lambda v: ar.Volume(np.zeros((2, 2, 2)), voxel_size=v), "voxel_size"),
        "read_volume": (lambda v: ar.read_volume(tif, voxel_size=v), "voxel_size"),
        "read_swc": (lambda v: read_swc(swc, space="lm", unit="um", voxel_size=v), "voxel_size"),
        "read_table": (lambda v: read_table(table, space="em", unit="nm", voxel_size=v), "voxel_size"),
        "read_landmarks": (lambda v: read_landmarks(lm, src_unit="um", dst_unit="um", dst_voxel_size=v),
                           "dst_voxel_size"),
        "pyramid_factors": (lambda v: pyramid_factors((30, 512, 512), (50, 4, 4), target_voxel_size=v),
                            "target_voxel_size"),
        "label_interface": (lambda v: label_interface(lab, 1, 2, v), "voxel_size"),
        "surface_distances": (lambda v: surface_distances(lab == 1, lab == 2, v), "voxel_size"),
        "midsagittal_plane": (lambda v: midsagittal_plane(img, v, lr_axis=2, working_spacing=1.0), "voxel_size"),
        "synthetic_lm_pair": (lambda v: synthetic_lm_pair(em, lm_voxel_size=v, psf_sigma=0), "lm_voxel_size"),
    }


@pytest.mark.parametrize("bad", ["25", (True, 1, 1), (50, 40), (1, np.inf, 1), -1])
@pytest.mark.parametrize("caller", ["Volume", "read_volume", "read_swc", "read_table", "read_landmarks",
                                    "pyramid_factors", "label_interface", "surface_distances", "midsagittal_plane",
                                    "synthetic_lm_pair"])
def test_every_voxel_size_goes_through_as_voxel_size(tmp_path, caller, bad):
    call, field = _callers(tmp_path)[caller]
    with pytest.raises(InputError, match="voxel size must be") as e:
        call(bad)
    assert e.value.field == field
