"""Transform files: ANTs/ITK interop against ANTs and SimpleITK themselves, NGFF round trips, bad files.

Ground truth for ANTs files is ``ants.apply_transforms_to_points`` on the same
files (it computes in float32, hence the 1e-2 physical-unit tolerance); for
files atlasreg writes it is SimpleITK's ``ReadTransform(...).TransformPoint``.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

import numpy as np
import pandas as pd
import pytest

import atlasreg as ar
from atlasreg.errors import InputError, OutputExistsError, SpaceMismatchError
from atlasreg.transforms.field import DisplacementField
from atlasreg.transforms.files import load_ants_registration, load_transform, save_transform

ants = pytest.importorskip("ants")
sitk = pytest.importorskip("SimpleITK")

FIXED = ar.Space("fixed", "um", "psl")
MOVING = ar.Space("moving", "um", "psl")


def ants_points(points, transformlist, whichtoinvert=None):
    df = pd.DataFrame(np.asarray(points, float), columns=list("xyz"))
    out = ants.apply_transforms_to_points(3, df, [str(t) for t in transformlist], whichtoinvert=whichtoinvert)
    return out[list("xyz")].to_numpy(float)


def sitk_points(path, points):
    tx = sitk.ReadTransform(str(path))
    return np.array([tx.TransformPoint(tuple(float(v) for v in p)) for p in points])


@pytest.fixture(scope="module")
def brain(data_dir):
    """The real light-sheet brain, 4x smaller (68x48x68 voxels of about 200x160x160 µm)."""
    import tifffile
    from scipy import ndimage as ndi

    full = tifffile.imread(data_dir / "lightsheet" / "brain_psl_50x40x40um.tif").astype(np.float32)
    small = ndi.zoom(full, 0.25, order=1)
    vs = np.array([50.0, 40.0, 40.0]) * np.array(full.shape) / np.array(small.shape)
    return ar.Volume(small, voxel_size=vs, space=FIXED)


@pytest.fixture(scope="module")
def known_affine(brain):
    """A known fixed -> moving affine (rotation of a few degrees about the centre plus a shift)."""
    c = brain.index_to_physical([np.array(brain.shape) / 2.0])[0]
    R = ar.Affine.from_rotation([5, -3, 4], src=FIXED, dst=MOVING, center=c)
    return ar.Affine(ar.Affine.from_translation([150, -100, 80]).matrix @ R.matrix, FIXED, MOVING)


@pytest.fixture(scope="module")
def reg(brain, known_affine, tmp_path_factory):
    """A real, short ants.registration SyN run: moving = the brain moved by ``known_affine``."""
    out = tmp_path_factory.mktemp("ants")
    grid = ar.Grid(brain.shape, tuple(brain.voxel_size), MOVING)
    moving = ar.warp(brain, known_affine, grid)
    r = ants.registration(brain.to_ants(), moving.to_ants(), type_of_transform="SyN",
                          reg_iterations=(20, 10, 0), outprefix=str(out / "reg_"))
    return {"fwdtransforms": r["fwdtransforms"], "invtransforms": r["invtransforms"], "dir": out,
            "fixed": brain.to_ants(), "moving": moving.to_ants()}


@pytest.fixture(scope="module")
def points(brain):
    """Points over the fixed volume, plus some beyond its edges (outside the warp's grid)."""
    rng = np.random.default_rng(7)
    lo, hi = brain.grid.bounds()
    inside = rng.uniform(lo, hi, (1500, 3))
    span = hi - lo
    outside = rng.uniform(lo - 0.3 * span, hi + 0.3 * span, (300, 3))
    return np.vstack([inside, outside])


# ---------------------------------------------------------------------------------------------
# (1) ANTs registration output: agreement with ANTs' own point mapping
# ---------------------------------------------------------------------------------------------
def test_ants_files_are_what_conventions_say(reg):
    assert [os.path.basename(p) for p in reg["fwdtransforms"]] == ["reg_1Warp.nii.gz", "reg_0GenericAffine.mat"]
    assert [os.path.basename(p) for p in reg["invtransforms"]] == ["reg_0GenericAffine.mat",
                                                                   "reg_1InverseWarp.nii.gz"]


def test_fwdtransforms_map_points_as_ants_does(reg, points):
    T = load_transform(reg["fwdtransforms"], src=FIXED, dst=MOVING)
    assert (T.src, T.dst) == (FIXED, MOVING)
    ours = T.map_points(points)
    theirs = ants_points(points, reg["fwdtransforms"])
    assert np.all(np.isfinite(ours))
    assert np.abs(ours - theirs).max() < 1e-2
    # The warp really moves points (so the agreement is not that of two identities).
    assert np.linalg.norm(theirs - points, axis=1).max() > 100.0


def test_fwdtransforms_run_fixed_to_moving(reg, brain, known_affine):
    """moving = brain moved by A (fixed -> moving), so the fixed -> moving pull-back ANTs found is about A."""
    T = load_transform(reg["fwdtransforms"], src=FIXED, dst=MOVING)
    idx = np.argwhere(brain.data > np.percentile(brain.data, 60))[::7]
    pts = brain.index_to_physical(idx)
    err = np.linalg.norm(T.map_points(pts) - known_affine.map_points(pts), axis=1)
    wrong_way = np.linalg.norm(T.map_points(pts) - known_affine.inverse().map_points(pts), axis=1)
    voxel = brain.voxel_size.max()
    assert np.median(err) < 0.5 * voxel
    assert np.median(wrong_way) > 1.5 * voxel


def test_ants_registration_inverse_chain(reg, points):
    M = load_ants_registration(reg, fixed=FIXED, moving=MOVING)
    assert (M.src.name, M.dst.name) == ("moving", "fixed")
    fwd = M.inverse()
    assert (fwd.src.name, fwd.dst.name) == ("fixed", "moving")
    y = ants_points(points, reg["fwdtransforms"])
    assert np.abs(fwd.map_points(points) - y).max() < 1e-2
    # moving -> fixed is exactly ANTs' invtransforms chain (affine inverted, then the inverse warp).
    back_ants = ants_points(y, reg["invtransforms"])
    back = M.map_points(y)
    assert np.abs(back - back_ants).max() < 1e-2
    # ... and it maps back: SyN's inverse warp is accurate to a small fraction of a voxel.
    inside = slice(0, 1500)
    assert np.abs(back[inside] - points[inside]).max() < 0.05 * 160.0
    # load_transform on the inverse list gives the same chain.
    T_inv = load_transform(reg["invtransforms"], src=MOVING, dst=FIXED)
    assert np.abs(T_inv.map_points(y) - back).max() < 1e-9


def test_load_transform_uses_the_inverse_warp_ants_wrote(reg, points, tmp_path):
    import shutil

    T = load_transform(reg["fwdtransforms"], src=FIXED, dst=MOVING)
    y = T.map_points(points)
    inv = T.inverse()
    assert (inv.src.name, inv.dst.name) == ("moving", "fixed")
    assert np.abs(inv.map_points(y) - ants_points(y, reg["invtransforms"])).max() < 1e-2
    # ... and the other way round.
    T_inv = load_transform(reg["invtransforms"], src=MOVING, dst=FIXED)
    assert np.abs(T_inv.inverse().map_points(points) - y).max() < 1e-9
    # Without the inverse warp beside it, the inverse is solved numerically (and still maps back).
    for p in reg["fwdtransforms"]:
        shutil.copy(p, tmp_path)
    alone = load_transform([tmp_path / os.path.basename(p) for p in reg["fwdtransforms"]], src=FIXED, dst=MOVING)
    back = alone.inverse().map_points(y[:1500])
    assert np.abs(back - points[:1500]).max() < 1e-3


def test_ants_composite_h5(reg, points, tmp_path):
    r = ants.registration(reg["fixed"], reg["moving"], type_of_transform="SyN", reg_iterations=(10, 0, 0),
                          outprefix=str(tmp_path / "c_"), write_composite_transform=True)
    assert r["fwdtransforms"].endswith("Composite.h5")
    T = load_transform(r["fwdtransforms"], src=FIXED, dst=MOVING)
    assert np.abs(T.map_points(points) - ants_points(points, [r["fwdtransforms"]])).max() < 1e-2
    M = load_ants_registration(r, fixed=FIXED, moving=MOVING)
    y = T.map_points(points)
    assert np.abs(M.map_points(y) - ants_points(y, [r["invtransforms"]])).max() < 1e-2
    # The InverseComposite.h5 beside it is the loaded transform's inverse.
    assert np.abs(T.inverse().map_points(y) - M.map_points(y)).max() < 1e-9


def test_affine_only_registration_inverse(reg, tmp_path, points):
    r = ants.registration(reg["fixed"], reg["moving"], type_of_transform="Rigid", aff_iterations=(20, 0, 0, 0),
                          outprefix=str(tmp_path / "r_"))
    M = load_ants_registration(r, fixed=FIXED, moving=MOVING)
    assert isinstance(M, ar.Affine)
    assert np.abs(M.inverse().map_points(points) - ants_points(points, r["fwdtransforms"])).max() < 1e-2
    assert np.allclose(M.map_points(M.inverse().map_points(points)), points, atol=1e-8)


def test_file_unit_converts_at_both_ends(reg, points):
    T_um = load_transform(reg["fwdtransforms"], src=FIXED, dst=MOVING)
    T_mm = load_transform(reg["fwdtransforms"], src=ar.Space("fixed", "mm"), dst=ar.Space("moving", "mm"),
                          file_unit="um")
    assert np.allclose(T_mm.map_points(points / 1000.0), T_um.map_points(points) / 1000.0, rtol=0, atol=1e-9)
    with pytest.raises(InputError, match="file_unit"):
        load_transform(reg["fwdtransforms"], src=ar.Space("fixed", "mm"), dst=MOVING)


# ---------------------------------------------------------------------------------------------
# (2) What atlasreg writes, SimpleITK and ANTs read the same way
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pieces(reg):
    fwd = load_transform(reg["fwdtransforms"], src=FIXED, dst=MOVING)
    field, affine = fwd.steps
    return {"affine": load_transform(reg["fwdtransforms"][1], src=FIXED, dst=MOVING),
            "field": load_transform(reg["fwdtransforms"][0], src=FIXED, dst=MOVING), "composite": fwd}


@pytest.mark.parametrize("kind,ext", [("affine", ".h5"), ("affine", ".tfm"), ("affine", ".txt"),
                                      ("affine", ".mat"), ("field", ".h5"), ("field", ".tfm"),
                                      ("composite", ".h5"), ("composite", ".txt")])
def test_saved_itk_files_read_by_simpleitk(pieces, points, tmp_path, kind, ext):
    T = pieces[kind]
    p = save_transform(T, tmp_path / f"t{ext}")
    pts = points[::6]
    ours = T.map_points(pts)
    theirs = sitk_points(p, pts)
    assert np.abs(ours - theirs).max() <= 1e-6 * np.abs(ours).max()
    back = load_transform(p)  # spaces recorded in the file (except .mat)
    if ext != ".mat":
        assert (back.src, back.dst) == (T.src, T.dst)
    assert np.array_equal(back.map_points(pts), ours)


def test_saved_files_read_by_ants(pieces, points, tmp_path):
    aff = save_transform(pieces["affine"], tmp_path / "a.mat")
    fld = save_transform(pieces["field"], tmp_path / "f.nii.gz")
    comp = save_transform(pieces["composite"], tmp_path / "c.h5")
    expect = pieces["composite"].map_points(points)
    assert np.abs(ants_points(points, [fld, aff], whichtoinvert=[False, False]) - expect).max() < 1e-2
    assert np.abs(ants_points(points, [comp]) - expect).max() < 1e-2
    # The .nii.gz is a vector image ANTs reads with the same geometry and values.
    img = ants.image_read(str(fld))
    assert img.components == 3
    assert np.array_equal(img.numpy(), pieces["field"].displacement)
    assert np.allclose(img.spacing, pieces["field"].spacing)
    back = load_transform([fld, aff], src=FIXED, dst=MOVING)
    assert np.array_equal(back.map_points(points), expect)


def _linear_itk_transforms():
    c = (500.0, -300.0, 1200.0)
    e = sitk.Euler3DTransform(c, 0.1, -0.2, 0.3, (10.0, 20.0, -5.0))
    q = (0.1, 0.2, 0.3, float(np.sqrt(1 - 0.14)))  # unit quaternion (versor)
    s = sitk.Similarity3DTransform(1.3, q, (3.0, 4.0, 5.0), c)
    v = sitk.VersorRigid3DTransform(q, (1.0, 2.0, 3.0), c)
    k = sitk.ScaleSkewVersor3DTransform((1.1, 0.9, 1.2), (0.01, 0.02, 0.0, 0.03, 0.0, 0.01), q,
                                        (7.0, 8.0, 9.0), c)
    sc = sitk.ScaleTransform(3, (2.0, 0.5, 1.5))
    sc.SetCenter(c)
    tr = sitk.TranslationTransform(3, (1.5, -2.5, 3.5))
    a = sitk.AffineTransform((1.1, 0.1, 0, -0.1, 0.9, 0.05, 0, 0.02, 1.2), (4.0, 5.0, 6.0), c)
    return {"euler": e, "similarity": s, "versor": v, "scaleskewversor": k, "scale": sc, "translation": tr,
            "affine_centred": a}


@pytest.mark.parametrize("name", ["affine_centred", "euler", "scale", "scaleskewversor", "similarity",
                                  "translation", "versor"])
def test_linear_itk_types_with_centres(name, tmp_path, points):
    tx = _linear_itk_transforms()[name]
    for ext in (".tfm", ".h5"):
        p = tmp_path / f"{name}{ext}"
        sitk.WriteTransform(tx, str(p))
        T = load_transform(p, src=FIXED, dst=MOVING)
        assert isinstance(T, ar.Affine)
        want = np.array([tx.TransformPoint(tuple(q)) for q in points[:100]])
        assert np.allclose(T.map_points(points[:100]), want, rtol=1e-12, atol=1e-9)


def test_itk_classes_without_a_simpleitk_type(tmp_path):
    p = tmp_path / "mob.tfm"
    p.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\n"
                 "Parameters: 1 0.1 0 0 1 0 0 0 1.2 1 2 3\nFixedParameters: 10 20 30\n")
    T = load_transform(p)
    # y = M (x - c) + c + t
    M = np.array([[1, 0.1, 0], [0, 1, 0], [0, 0, 1.2]])
    x = np.array([1.0, 1.0, 1.0])
    c = np.array([10.0, 20.0, 30.0])
    assert np.allclose(T.map_points(x), M @ (x - c) + c + [1, 2, 3])


def test_itk_mixed_units_and_orientation_round_trip(pieces, points, tmp_path):
    em = ar.Space("em", "nm")
    lm = ar.Space("lm", "um", "psl")
    A = ar.Affine(np.array([[0.0, 1e-3, 0, 10], [-1e-3, 0, 0, 20], [0, 0, 2e-3, 5], [0, 0, 0, 1]]), em, lm)
    p = save_transform(A, tmp_path / "em_lm.tfm")
    back = load_transform(p)
    assert (back.src, back.dst) == (em, lm)
    assert np.allclose(back.matrix, A.matrix, rtol=1e-15, atol=0)
    assert np.allclose(sitk_points(p, points[:50] * 1e3), A.map_points(points[:50] * 1e3), rtol=1e-12)
    # A chain with a field and ends in different units is stored in one unit (dst's) and comes back.
    F = pieces["field"]
    em_um = ar.Space("em_um", "um")
    chain = ar.Sequence([ar.Affine.from_units(em, em_um),
                         DisplacementField(F.displacement, F.spacing, F.origin, F.direction, em_um, lm,
                                           outside="zero")])
    p2 = save_transform(chain, tmp_path / "chain.h5")
    back2 = load_transform(p2)
    assert (back2.src, back2.dst) == (em, lm)
    assert np.allclose(back2.map_points(points * 1e3), chain.map_points(points * 1e3), rtol=0, atol=1e-9)


def test_itk_refuses_what_it_cannot_hold(pieces, tmp_path, points):
    with pytest.raises(InputError, match="NGFF"):
        save_transform(pieces["field"].inverse(), tmp_path / "inv.h5")
    with pytest.raises(InputError, match=r"\.mat"):
        save_transform(pieces["composite"], tmp_path / "c.mat")
    with pytest.raises(InputError, match="displacement field"):
        save_transform(pieces["affine"], tmp_path / "a.nii.gz")
    tps = ar.ThinPlateSpline(points[:20], points[:20] * 1.01 + 3.0, src="a", dst="b")
    with pytest.raises(InputError, match="json"):
        save_transform(tps, tmp_path / "tps.tfm")
    with pytest.raises(InputError, match="unknown transform file type"):
        save_transform(pieces["affine"], tmp_path / "a.xyz")


def test_no_overwrite_without_force(pieces, tmp_path):
    p = save_transform(pieces["affine"], tmp_path / "a.tfm")
    with pytest.raises(OutputExistsError):
        save_transform(pieces["affine"], p)
    save_transform(pieces["affine"].inverse(), p, force=True)
    assert np.allclose(load_transform(p).matrix, pieces["affine"].inverse().matrix)


# ---------------------------------------------------------------------------------------------
# (3) NGFF 0.6 JSON
# ---------------------------------------------------------------------------------------------
def test_ngff_round_trip_of_an_ants_registration(reg, points, tmp_path):
    M = load_ants_registration(reg, fixed=FIXED, moving=MOVING)
    p = save_transform(M, tmp_path / "moving_to_fixed.json")
    back = load_transform(p)
    assert (back.src, back.dst) == (MOVING, FIXED)
    y = M.inverse().map_points(points)
    assert np.array_equal(back.map_points(y), M.map_points(y))
    # The exact ANTs inverse travels along as an NGFF bijection.
    assert np.array_equal(back.inverse().map_points(points), M.inverse().map_points(points))
    doc = json.loads(p.read_text())
    ct = doc["ome"]["scene"]["coordinateTransformations"][0]
    assert doc["ome"]["version"] == "0.6rc0"
    assert ct["type"] == "bijection" and (ct["input"], ct["output"]) == ({"name": "moving"}, {"name": "fixed"})
    assert [t["type"] for t in ct["forward"]["transformations"]] == ["affine", "displacements"]
    systems = {cs["name"]: cs for cs in doc["ome"]["scene"]["coordinateSystems"]}
    assert systems["fixed"]["axes"][0] == {"name": "z", "type": "space", "unit": "micrometer",
                                           "orientation": {"type": "anatomical",
                                                           "value": "posterior-to-anterior"}}
    # The field is a multiscales group beside the JSON: array s0 is (3, X, Y, Z), displacement axis first.
    import zarr

    where = tmp_path / ct["forward"]["transformations"][1]["path"]
    ms = dict(zarr.open_group(str(where), mode="r").attrs)["ome"]["multiscales"][0]
    arr = zarr.open_array(str(where / ms["datasets"][0]["path"]), mode="r")
    assert arr.shape[0] == 3 and arr.ndim == 4
    assert ms["coordinateSystems"][0]["axes"][0]["type"] == "displacement"
    # Asking for the reverse direction gives the inverse.
    rev = load_transform(p, src="fixed", dst="moving")
    assert np.array_equal(rev.map_points(points), M.inverse().map_points(points))


def test_a_saved_registration_stores_each_field_once_and_reads_only_the_way_it_maps(reg, points, tmp_path):
    """What ``atlasreg register`` saves: both directions in one file (sample -> atlas, with its inverse), where
    the inverse chain repeats the forward's two fields. Each array is stored once; mapping one way reads only
    that way's field, and a damaged other half is an error naming the file when, and only when, it is used."""
    import shutil

    import zarr

    core = load_ants_registration(reg, fixed=FIXED, moving=MOVING)
    sample, atlas = ar.Space("sample", "um", "psl"), ar.Space("atlas", "um", "asr")
    R = ar.Affine.from_translation([5.0, -3.0, 2.0], src=sample, dst=MOVING)
    C = ar.Affine.from_rotation([0, 0, 90], src=atlas, dst=FIXED)
    T = ar.Sequence([R, core, C.inverse()]).with_inverse(ar.Sequence([C, core.inverse(), R.inverse()]))
    p = save_transform(T, tmp_path / "moving_to_fixed.json")
    fields = tmp_path / "moving_to_fixed_fields.zarr" / "coordinateTransformations"
    stored = sorted(g.name for g in fields.iterdir() if g.is_dir())
    assert len(stored) == 2, stored  # ANTs' warp and inverse warp, each once (before: four arrays)
    text = p.read_text()
    assert all(text.count(f"coordinateTransformations/{g}\"") == 2 for g in stored)

    x = R.inverse().map_points(points)
    y = T.map_points(x)
    assert np.array_equal(load_transform(p).map_points(x), y)
    assert np.array_equal(load_transform(p).inverse().map_points(y), T.inverse().map_points(y), equal_nan=True)
    # Which array holds the inverse warp (atlas -> sample only): the one of the inverse's first step.
    doc = json.loads(text)
    inner = doc["ome"]["scene"]["coordinateTransformations"][0]["forward"]["transformations"][1]
    inverse_only = inner["inverse"]["transformations"][0]["path"].rsplit("/", 1)[1]
    assert inverse_only in stored
    arr = zarr.open_array(str(fields / inverse_only / "s0"), mode="r")
    assert arr.shape[0] == 3
    shutil.rmtree(fields / inverse_only)
    back = load_transform(p)  # reads the forward half only
    assert np.array_equal(back.map_points(x), y)
    with pytest.raises(InputError, match="moving_to_fixed"):
        back.inverse().map_points(y)


def test_ngff_round_trip_of_every_kind(tmp_path, data_dir):
    em, lm = ar.Space("em", "nm"), ar.Space("lm", "um", "psl")
    mid, ccf = ar.Space("lm_warped", "um"), ar.Space("ccf", "um", "asr")
    rng = np.random.default_rng(3)
    u = rng.normal(0, 2.0, (6, 7, 8, 3))
    F = DisplacementField(u, spacing=(10, 12, 14), origin=(-5, 3, 2),
                          direction=ar.Affine.from_rotation([0, 0, 30]).matrix[:3, :3], src=lm, dst=mid)
    src_l = rng.uniform(0, 80, (12, 3))
    tps = ar.ThinPlateSpline(src_l, src_l * 1.02 + np.sin(src_l / 20), src=mid, dst=ccf)
    chain = ar.Sequence([ar.Affine.from_scale(1e-3, src=em, dst=lm), F, tps])
    cases = [
        ar.Affine.from_translation([1.5, -2, 3], src="a", dst="b"),
        ar.Affine.from_scale([2, 3, 4], src="a", dst="b"),
        ar.Affine.from_rotation([10, 20, 30], src="a", dst="b", center=(5, 5, 5)),
        F, F.inverse(), tps, tps.inverse(), chain, chain.inverse(),
    ]
    pts = rng.uniform(0, 80, (200, 3))
    for k, T in enumerate(cases):
        p = save_transform(T, tmp_path / f"t{k}.json")
        back = load_transform(p)
        assert (back.src, back.dst) == (T.src, T.dst), T
        x = pts * (1e3 if T.src.unit == "nm" else 1.0)
        a, b = T.map_points(x), back.map_points(x)
        assert np.array_equal(np.isnan(a), np.isnan(b)), T
        ok = ~np.isnan(a)
        assert np.allclose(a[ok], b[ok], rtol=0, atol=1e-9 * max(1.0, np.abs(a[ok]).max())), T
    doc = json.loads((tmp_path / "t1.json").read_text())
    assert doc["ome"]["scene"]["coordinateTransformations"][0] == {
        "type": "scale", "scale": [2.0, 3.0, 4.0], "input": {"name": "a"}, "output": {"name": "b"}}


def test_ngff_reads_spec_documents(tmp_path):
    """A hand-written NGFF document (as another tool would write it): sequence of scale and translation."""
    doc = {"ome": {"version": "0.6", "coordinateSystems": [
        {"name": "in", "axes": [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]},
        {"name": "out", "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]}],
        "coordinateTransformations": [{"type": "sequence", "input": "in", "output": "out", "transformations": [
            {"type": "scale", "scale": [0.001, 0.002, 0.004]},
            {"type": "translation", "translation": [9, -1.42, 0]},
            {"type": "mapAxis", "mapAxis": [2, 1, 0]}]}]}}
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(doc))
    T = load_transform(p)
    assert T.src == ar.Space("in", "nm") and T.dst == ar.Space("out", "um")
    assert np.allclose(T.map_points([[1000.0, 1000.0, 1000.0]]), [[4.0, 0.58, 10.0]])


def test_load_list_of_ngff_files_must_chain(tmp_path):
    a = save_transform(ar.Affine.from_translation([1, 0, 0], src="a", dst="b"), tmp_path / "ab.json")
    b = save_transform(ar.Affine.from_translation([0, 1, 0], src="b", dst="c"), tmp_path / "bc.json")
    c = save_transform(ar.Affine.from_translation([0, 0, 1], src="x", dst="y"), tmp_path / "xy.json")
    T = load_transform([a, b])
    assert (T.src.name, T.dst.name) == ("a", "c")
    assert np.allclose(T.map_points([[0.0, 0, 0]]), [[1, 1, 0]])
    with pytest.raises(SpaceMismatchError, match="xy.json"):
        load_transform([a, c])
    with pytest.raises(SpaceMismatchError):
        load_transform(a, src="a", dst="c")


# ---------------------------------------------------------------------------------------------
# (4) Broken files: InputError naming the file
# ---------------------------------------------------------------------------------------------
def test_corrupt_and_truncated_files(reg, pieces, tmp_path):
    cases = {}
    good_h5 = save_transform(pieces["composite"], tmp_path / "good.h5")
    cases["trunc.h5"] = good_h5.read_bytes()[: good_h5.stat().st_size // 2]
    warp = open(reg["fwdtransforms"][0], "rb").read()
    cases["trunc.nii.gz"] = warp[: len(warp) // 3]
    plain = save_transform(pieces["field"], tmp_path / "plain.nii").read_bytes()
    cases["trunc.nii"] = plain[: len(plain) - 1000]  # ITK alone would zero-fill the missing voxels
    cases["garbage.tfm"] = b"#Insight Transform File V1.0\n#Transform 0\nTransform: NoSuchTransform_double_3_3\n"
    cases["garbage.mat"] = os.urandom(200)
    cases["trunc.json"] = b'{"ome": {"version": "0.6", "coordinateTransf'
    cases["empty.txt"] = b""
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(InputError) as exc:
            load_transform(p, src=FIXED, dst=MOVING)
        assert name in str(exc.value), str(exc.value)
    with pytest.raises(InputError, match="does not exist"):
        load_transform(tmp_path / "missing.h5")
    with pytest.raises(InputError, match="unknown transform file type"):
        load_transform(good_h5.with_suffix(".xyz"))


def test_wrong_dimension_and_unsupported_types(tmp_path):
    t2 = sitk.AffineTransform(2)
    sitk.WriteTransform(t2, str(tmp_path / "2d.tfm"))
    with pytest.raises(InputError, match="3-D"):
        load_transform(tmp_path / "2d.tfm")
    (tmp_path / "tps.tfm").write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: "
                                      "ThinPlateSplineKernelTransform_double_3_3\nParameters: 1 2 3\n"
                                      "FixedParameters: 0 0 0\n")
    with pytest.raises(InputError, match="ThinPlateSplineKernelTransform"):  # ITK itself cannot create it
        load_transform(tmp_path / "tps.tfm")
    img = sitk.GetImageFromArray(np.zeros((4, 5, 6, 2)), isVector=True)
    sitk.WriteImage(img, str(tmp_path / "two_components.nii.gz"))
    with pytest.raises(InputError, match="3 vector components"):
        load_transform(tmp_path / "two_components.nii.gz")
    scalar = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    sitk.WriteImage(scalar, str(tmp_path / "scalar.nii.gz"))
    with pytest.raises(InputError, match="components"):
        load_transform(tmp_path / "scalar.nii.gz")
    doc = {"ome": {"version": "0.6", "coordinateSystems": [
        {"name": s, "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "xyz"]}
        for s in ("a", "b")], "coordinateTransformations": [
        {"type": "affine", "affine": [[1, 0, 0], [0, 1, 0]], "input": "a", "output": "b"}]}}
    (tmp_path / "bad_affine.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="needs 3 rows of 4"):
        load_transform(tmp_path / "bad_affine.json")
    doc["ome"]["coordinateTransformations"][0] = {"type": "byDimension", "input": "a", "output": "b"}
    (tmp_path / "bydim.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="byDimension"):
        load_transform(tmp_path / "bydim.json")


def test_ants_list_errors(reg, tmp_path):
    with pytest.raises(InputError, match="only a matrix"):
        load_transform([(reg["fwdtransforms"][0], True)], src=FIXED, dst=MOVING)
    with pytest.raises(InputError, match="load_ants_registration"):
        load_transform({"fwdtransforms": reg["fwdtransforms"]})
    with pytest.raises(InputError, match="empty"):
        load_transform([], src=FIXED, dst=MOVING)
    with gzip.open(tmp_path / "x.nii.gz", "wb") as fh:
        fh.write(b"not nifti")
    with pytest.raises(InputError, match="x.nii.gz"):
        load_transform([tmp_path / "x.nii.gz", reg["fwdtransforms"][1]], src=FIXED, dst=MOVING)


# ---------------------------------------------------------------------------------------------
# (5) NIfTI warps read in one pass: the same numbers SimpleITK reads, damage still caught, inverse lazy
# ---------------------------------------------------------------------------------------------
def _sitk_field(path):
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0, 3), img


def _assert_same_field(F, path):
    want, img = _sitk_field(path)
    assert F.displacement.dtype == want.dtype and F.displacement.shape == want.shape
    assert np.array_equal(F.displacement, want)
    assert np.allclose(F.spacing, img.GetSpacing(), rtol=0, atol=1e-12)
    assert np.allclose(F.origin, img.GetOrigin(), rtol=0, atol=1e-9)
    assert np.allclose(F.direction.ravel(), img.GetDirection(), rtol=0, atol=1e-12)


def test_nifti_warps_read_in_one_pass_equal_simpleitk(reg, tmp_path):
    import nibabel as nib

    from atlasreg.transforms.nifti_warp import read_nifti_warp

    for p in (reg["fwdtransforms"][0], reg["invtransforms"][1]):
        F = read_nifti_warp(Path(p), FIXED, MOVING, "zero")
        assert F is not None, "ANTs' warp layout must take the one-pass reader"
        _assert_same_field(F, p)
        _assert_same_field(load_transform(p, src=FIXED, dst=MOVING), p)
    # Other encodings of the same field: uncompressed float64, big-endian, several gzip members, and
    # scaled data (read through SimpleITK, which applies scl_slope/scl_inter).
    F = load_transform(reg["fwdtransforms"][0], src=FIXED, dst=MOVING)
    plain = save_transform(DisplacementField(F.displacement.astype(np.float64), F.spacing, F.origin, F.direction,
                                             src=FIXED, dst=MOVING), tmp_path / "f64.nii")
    img = nib.load(str(plain))
    hdr = img.header.as_byteswapped(">")
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352
    with open(tmp_path / "big_endian.nii", "wb") as fh:
        hdr.write_to(fh)  # (with the 4 extension bytes)
        fh.write(np.asarray(img.dataobj).astype(">f4").tobytes(order="F"))
    assert nib.load(str(tmp_path / "big_endian.nii")).header.endianness == ">"
    raw = (tmp_path / "big_endian.nii").read_bytes()
    (tmp_path / "members.nii.gz").write_bytes(gzip.compress(raw[:100_000]) + gzip.compress(raw[100_000:]))
    scaled = nib.Nifti1Image(np.asanyarray(img.dataobj).astype(np.float32) / 2, None, img.header.copy())
    scaled.header.set_data_dtype(np.float32)
    scaled.header.set_slope_inter(2.0, 0.0)
    nib.save(scaled, str(tmp_path / "scaled.nii.gz"))
    for name in ("f64.nii", "big_endian.nii", "members.nii.gz", "scaled.nii.gz"):
        G = load_transform(tmp_path / name, src=FIXED, dst=MOVING)
        _assert_same_field(G, tmp_path / name)
        if name == "scaled.nii.gz":  # scaled data is left to SimpleITK
            assert read_nifti_warp(tmp_path / name, FIXED, MOVING, "zero") is None
        else:
            assert np.allclose(G.displacement, F.displacement, rtol=0, atol=1e-5), name


def test_damaged_nifti_warps_are_refused(reg, tmp_path):
    """ITK reads NaN as 0 and zero-fills what is missing; the one-pass reader must refuse both."""
    src = open(reg["fwdtransforms"][0], "rb").read()
    data = bytearray(gzip.decompress(src))
    cases = {}
    nan = bytearray(data)
    nan[352 + 4 * 1234: 352 + 4 * 1235] = np.array([np.nan], "<f4").tobytes()
    cases["nan.nii.gz"] = (gzip.compress(bytes(nan)), "NaN or inf")
    inf = bytearray(data)
    inf[-4:] = np.array([-np.inf], "<f4").tobytes()  # the very last value (of the last component)
    cases["inf.nii"] = (bytes(inf), "NaN or inf")
    flipped = bytearray(src)
    flipped[len(src) // 2] ^= 0x5A
    cases["flipped.nii.gz"] = (bytes(flipped), "corrupt|damaged")
    cases["short.nii"] = (bytes(data[:-4000]), "truncated")
    cases["short.nii.gz"] = (gzip.compress(bytes(data[:-4000])), "truncated")
    for name, (blob, what) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(InputError, match=what) as exc:
            load_transform(tmp_path / name, src=FIXED, dst=MOVING)
        assert name in str(exc.value)


def test_inverse_warp_is_read_only_when_first_used(reg, points, monkeypatch):
    from atlasreg.transforms import ants_lists

    read = []
    real = ants_lists.read_field
    monkeypatch.setattr(ants_lists, "read_field", lambda p, *a: read.append(os.path.basename(p)) or real(p, *a))
    T = load_transform(reg["fwdtransforms"], src=FIXED, dst=MOVING)
    assert read == ["reg_1Warp.nii.gz"]
    y = T.map_points(points)
    assert read == ["reg_1Warp.nii.gz"]
    inv = T.inverse()
    assert read == ["reg_1Warp.nii.gz"]  # the inverse is there, not yet read
    back = inv.map_points(y)
    assert read == ["reg_1Warp.nii.gz", "reg_1InverseWarp.nii.gz"]
    assert np.abs(back - ants_points(y, reg["invtransforms"])).max() < 1e-2
    inv.map_points(y[:10])
    assert read == ["reg_1Warp.nii.gz", "reg_1InverseWarp.nii.gz"]  # read once
