"""register(): direction, orientation codes, the orientation search, save/load, and bad input.

Real data: the light-sheet brain, block-averaged 4x (200x160x160 µm) so every registration here takes
seconds; a known transform makes the moving image, so the true answer is known point by point.
"""
from __future__ import annotations

import re

import sys
from pathlib import Path

import numpy as np
import pytest

import atlasreg as ar
from atlasreg.errors import InputError

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SP4 = (200.0, 160.0, 160.0)
# few iterations at a coarse working grid: seconds per run
QUICK = dict(working_spacing=320.0, orientation_search="off", affine_iterations=(60, 30), affine_shrink=(2, 1),
             affine_smooth=(1, 0), syn_iterations=(30, 15), syn_shrink=(2, 1), syn_smooth=(1, 0), threads=2)


@pytest.fixture(scope="module")
def brain4(data_dir):
    tifffile = pytest.importorskip("tifffile")
    a = tifffile.imread(str(data_dir / "lightsheet" / "brain_psl_50x40x40um.tif"))
    s = tuple(n // 4 * 4 for n in a.shape)
    b = a[:s[0], :s[1], :s[2]].reshape(s[0] // 4, 4, s[1] // 4, 4, s[2] // 4, 4).mean((1, 3, 5))
    return b.astype(np.float32)


def _affine_moving(fixed: np.ndarray, spacing, A: np.ndarray) -> np.ndarray:
    """MOVING(x) = FIXED(A⁻¹ x) for a 4x4 map A of fixed points to moving points (physical, origin 0)."""
    from scipy import ndimage as ndi

    sp = np.asarray(spacing, float)
    Ainv = np.linalg.inv(A)
    # index -> index: i_f = S⁻¹ (Ainv (S i_m))
    M = np.diag(1 / sp) @ Ainv[:3, :3] @ np.diag(sp)
    off = Ainv[:3, 3] / sp
    return ndi.affine_transform(fixed, M, off, order=1, mode="constant", cval=0.0).astype(np.float32)


def _known_affine(shape, spacing, deg=6.0, scale=(0.95, 1.04, 1.0), shift=(250.0, -150.0, 120.0)):
    c = np.asarray(shape, float) * np.asarray(spacing, float) / 2
    a = np.deg2rad(deg)
    R = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]) @ np.diag(scale)
    A = np.eye(4)
    A[:3, :3] = R
    A[:3, 3] = c - R @ c + np.asarray(shift)
    return A


def _inside_points(arr, spacing, n=400, seed=0):
    idx = np.argwhere(arr > np.percentile(arr, 70))
    rng = np.random.default_rng(seed)
    return idx[rng.choice(len(idx), n, replace=False)] * np.asarray(spacing, float)


@pytest.fixture(scope="module")
def affine_case(brain4, tmp_path_factory):
    """A psl sample = the brain moved by a known affine; fixed = the brain itself; registered once."""
    A = _known_affine(brain4.shape, SP4)
    moving = ar.Volume(_affine_moving(brain4, SP4, A), SP4, orientation="psl", space="sample")
    fixed = ar.Volume(brain4, SP4, orientation="psl", space="ccf")
    res = ar.register(moving, fixed, preset="fast", **QUICK)
    return dict(A=A, moving=moving, fixed=fixed, res=res)


def test_direction_moving_points_land_on_fixed_and_back(affine_case, brain4):
    A, res = affine_case["A"], affine_case["res"]
    p_fixed = _inside_points(brain4, SP4)
    p_moving = p_fixed @ A[:3, :3].T + A[:3, 3]          # where each fixed point sits in the sample
    got_fixed = res.transform.map_points(p_moving)        # sample -> atlas
    err = np.linalg.norm(got_fixed - p_fixed, axis=1)
    start = np.linalg.norm(p_moving - p_fixed, axis=1)
    assert np.median(start) > 300                        # the task is not trivial
    assert np.median(err) < 60 and np.percentile(err, 95) < 150, (np.median(err), np.percentile(err, 95))
    back = res.transform.inverse().map_points(p_fixed)    # atlas -> sample
    err_b = np.linalg.norm(back - p_moving, axis=1)
    assert np.median(err_b) < 60 and np.percentile(err_b, 95) < 150
    # the transform says which way it maps
    assert res.transform.src.name == "sample" and res.transform.dst.name == "ccf"
    assert res.transform.inverse().src.name == "ccf"


def _fields(t):
    from atlasreg.transforms.field import DisplacementField

    if isinstance(t, DisplacementField):
        return [t]
    return [f for step in getattr(t, "steps", []) for f in _fields(step)]


def test_field_reaches_past_the_image_edge(affine_case):
    """Tissue cut by the fixed image's edge: the deformation lives on the working grid padded by ``pad``
    (360 µm by default) because ANTs holds a field at zero on its border; there it would pin the edge."""
    res, moving, fixed = affine_case["res"], affine_case["moving"], affine_case["fixed"]
    assert res.params["pad"] == 360.0
    (padded,) = _fields(res.transform)
    bare = ar.register(moving, fixed, preset="fast", **{**QUICK, "pad": 0.0, "syn_iterations": (2, 1)})
    (unpadded,) = _fields(bare.transform)
    k = int(np.ceil(360.0 / QUICK["working_spacing"]))      # voxels of padding on each side
    assert padded.shape[:3] == tuple(n + 2 * k for n in unpadded.shape[:3])
    # the same physical frame: the unpadded grid's voxel 0 is the padded grid's voxel k
    assert np.allclose(padded.index_to_physical @ [k, k, k, 1], unpadded.index_to_physical @ [0, 0, 0, 1])
    # ANTs' field is exactly zero on its border; with the padding the band that was that border moves
    assert np.abs(np.asarray(unpadded.displacement)[0]).max() == 0
    u = np.asarray(padded.displacement)
    assert np.abs(u[k]).max() > 1.0 and np.abs(u[-k - 1]).max() > 1.0


def _field_box(field) -> np.ndarray:
    """(2, 3): the lowest and highest physical coordinates of a field's voxel centres."""
    n = np.array(field.shape[:3]) - 1
    corners = np.array([[i, j, k, 1] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], float)
    xyz = corners @ np.asarray(field.index_to_physical).T
    return np.stack([xyz[:, :3].min(0), xyz[:, :3].max(0)])


def test_margin_only_where_the_fixed_tissue_reaches_the_edge(brain4):
    """A fixed brain with background on every side but one (cut at its first axis' start): the field's margin is
    added on that face only (``pad_faces="auto"``, the default, for a whole brain); ``"all"``, and ``"auto"`` for
    a partial extent, pad every face."""
    fixed_arr = np.pad(brain4, [(0, 5), (5, 5), (6, 6)])            # 1 mm of background except at axis 0's start
    A = _known_affine(fixed_arr.shape, SP4, deg=3.0, shift=(100.0, -80.0, 60.0))
    moving = ar.Volume(_affine_moving(fixed_arr, SP4, A), SP4, orientation="psl", space="sample")
    fixed = ar.Volume(fixed_arr, SP4, orientation="psl", space="ccf")
    quick = {**QUICK, "syn_iterations": (2, 1)}
    runs = {how: ar.register(moving, fixed, preset="fast", **quick, **kw)
            for how, kw in (("none", {"pad": 0.0}), ("tissue", {}), ("all", {"pad_faces": "all"}),
                            ("partial", {"extent": "auto", "missing_parts": "off"}))}
    boxes = {how: _field_box(_fields(res.transform)[0]) for how, res in runs.items()}
    k = np.ceil(360.0 / QUICK["working_spacing"]) * QUICK["working_spacing"]   # the margin, whole working voxels
    # the result says where the margin went, by the fixed orientation's letters (psl: index 0 of axis 0 posterior)
    margin = {how: (r.metrics["fixed_margin"], r.metrics["fixed_margin_faces"]) for how, r in runs.items()}
    assert margin["tissue"] == (k, "p") and margin["none"] == (0.0, "")   # 360 µm in whole working voxels
    assert margin["all"] == margin["partial"] == (k, "p,a,s,i,l,r")
    grown = boxes["tissue"] - boxes["none"]
    expected = np.zeros((2, 3))
    expected[0, 0] = -k                                               # axis 0's start: lower coordinates
    assert np.allclose(grown, expected, atol=1.0), grown
    assert np.allclose(boxes["all"] - boxes["none"], [[-k] * 3, [k] * 3], atol=1.0)
    assert np.allclose(boxes["partial"] - boxes["none"], [[-k] * 3, [k] * 3], atol=1.0)


def test_faces_reached_and_one_sided_pad():
    from atlasreg.registration.preprocess import faces_reached, pad

    m = np.zeros((8, 9, 10), bool)
    m[0:4, 2:9, 4:7] = True    # on axis 0's start and axis 1's end; 4, 2, 4 and 3 voxels from the other faces
    assert faces_reached(m, 10.0, 10.0).tolist() == [[True, False], [False, True], [False, False]]
    assert faces_reached(m, 10.0, 35.0).tolist() == [[True, False], [True, True], [False, True]]
    assert not faces_reached(np.zeros_like(m), 10.0, 100.0).any()
    v = ar.Volume(m.astype(np.float32), (10.0, 20.0, 30.0), origin=(1.0, 2.0, 3.0), space="x")
    p = pad(v, 45.0, faces=faces_reached(m, v.voxel_size, 10.0))   # 5 voxels on axis 0's start, 3 on axis 1's end
    assert p.shape == (13, 12, 10)
    assert np.array_equal(p.numpy()[5:, :9], m.astype(np.float32)) and p.numpy()[:5].max() == 0
    assert np.allclose(p.index_to_physical([[5, 0, 0]]), v.index_to_physical([[0, 0, 0]]))


_THREADS_SCRIPT = r"""
import sys, warnings
import numpy as np, tifffile
import atlasreg as ar
from atlasreg.transforms.field import DisplacementField

a = tifffile.imread(sys.argv[1])
s = tuple(n // 4 * 4 for n in a.shape)
b = a[:s[0], :s[1], :s[2]].reshape(s[0] // 4, 4, s[1] // 4, 4, s[2] // 4, 4).mean((1, 3, 5)).astype(np.float32)
sp = (200.0, 160.0, 160.0)
moving = ar.Volume(np.roll(b, (2, -1, 1), axis=(0, 1, 2)), sp, orientation="psl", space="sample")
fixed = ar.Volume(b, sp, orientation="psl", space="ccf")
quick = dict(working_spacing=320.0, orientation_search="off", affine_iterations=(30, 10), affine_shrink=(2, 1),
             affine_smooth=(1, 0), syn_iterations=(10, 5), syn_shrink=(2, 1), syn_smooth=(1, 0),
             syn_metric="Mattes", threads=1)

def field(res):
    steps = [res.transform]
    while steps:
        t = steps.pop()
        if isinstance(t, DisplacementField):
            return np.asarray(t.displacement)
        steps += list(getattr(t, "steps", []))

one, two = (field(ar.register(moving, fixed, preset="fast", **quick)) for _ in range(2))
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    ar.register(moving, fixed, preset="fast", **{**quick, "threads": 2})
print("IDENTICAL" if np.array_equal(one, two) else "DIFFERENT")
print("WARNED" if any("threads=2 cannot take effect" in str(w.message) for w in seen) else "SILENT")
"""


def test_threads_apply_before_ants_loads(data_dir):
    """``threads`` sets ITK's thread count for ANTs where it takes effect: before ANTs loads in the process. At one
    thread the same inputs then register identically (at two, ITK's sums differ from run to run); asked for another
    count once ANTs runs, it cannot apply, and says so."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"}
    out = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT,
                          str(data_dir / "lightsheet" / "brain_psl_50x40x40um.tif")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["IDENTICAL", "WARNED"], out.stdout


def test_pad_keeps_the_physical_frame():
    from atlasreg.registration.preprocess import pad

    a = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    R = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], float)   # rotated axes: the origin moves along them
    v = ar.Volume(a, (20.0, 30.0, 40.0), origin=(5.0, -3.0, 2.0), direction=R, space="x")
    p = pad(v, 100.0)                                       # 5, 4 and 3 voxels
    assert p.shape == (15, 14, 13)
    assert np.array_equal(p.numpy()[5:10, 4:10, 3:10], a) and p.numpy()[0].max() == 0
    idx = np.array([[0, 0, 0], [4, 5, 6], [2, 3, 1]])
    assert np.allclose(p.index_to_physical(idx + [5, 4, 3]), v.index_to_physical(idx))
    assert pad(v, 0.0) is v


def test_warp_and_warp_back_land_in_each_grid(affine_case):
    res, moving, fixed = affine_case["res"], affine_case["moving"], affine_case["fixed"]
    w = res.warp(moving)
    assert w.shape == fixed.shape and w.space.name == "ccf"
    f, m = fixed.numpy().ravel(), w.numpy().ravel()
    assert np.corrcoef(f, m)[0, 1] > 0.9
    labels = ar.Volume((fixed.numpy() > np.percentile(fixed.numpy(), 60)).astype(np.uint32), fixed.voxel_size,
                       space="ccf")
    on_sample = res.warp_back(labels)                     # nearest for a label image
    assert on_sample.shape == moving.shape and on_sample.dtype == np.uint32
    assert set(np.unique(on_sample.numpy())) <= {0, 1}
    inside = moving.numpy()[on_sample.numpy() == 1].mean()
    outside = moving.numpy()[on_sample.numpy() == 0].mean()
    assert inside > 3 * outside


def test_psl_sample_registers_to_asr_fixed(brain4):
    """The fixed volume is stored asr (as the Allen CCF); the sample psl. Points still land right."""
    A = _known_affine(brain4.shape, SP4, deg=0.0, scale=(1, 1, 1), shift=(200.0, 100.0, -150.0))
    sample = ar.Volume(_affine_moving(brain4, SP4, A), SP4, orientation="psl", space="sample")
    brain = ar.Volume(brain4, SP4, orientation="psl", space="brain")
    fixed = brain.reorient("asr", "ccf")                  # exact permutation/flip, no resampling
    to_asr = brain.reorient_transform("asr", "ccf")       # brain (psl) points -> ccf (asr) points
    res = ar.register(sample, fixed, preset="fast", **QUICK)
    p_brain = _inside_points(brain4, SP4)
    p_sample = p_brain @ A[:3, :3].T + A[:3, 3]
    want = to_asr.map_points(p_brain)
    err = np.linalg.norm(res.transform.map_points(p_sample) - want, axis=1)
    assert np.median(err) < 60, np.median(err)
    # axis 0 of the fixed runs anterior -> posterior: a point near the sample's posterior end (index 0 of
    # psl) lands at a large axis-0 coordinate in asr
    post = np.array([[5 * SP4[0], brain4.shape[1] / 2 * SP4[1], brain4.shape[2] / 2 * SP4[2]]])
    assert res.transform.map_points(post + A[:3, 3])[0, 0] > fixed.shape[0] * fixed.voxel_size[0] * 0.6


def test_wrong_orientation_is_flagged_before_the_run(brain4, monkeypatch):
    from atlasreg.registration import ants_backend
    from atlasreg.registration.orientation import OrientationError, search_orientation

    brain = ar.Volume(brain4, SP4, orientation="psl", space="brain")
    fixed = brain.reorient("asr", "ccf")
    right = ar.Volume(brain4, SP4, orientation="psl", space="sample")
    wrong = ar.Volume(brain4, SP4, orientation="asl", space="sample")   # a/p swapped by the user
    rep = search_orientation(right, fixed)
    assert not rep.flagged and rep.best[:2] == "ps"
    rep = search_orientation(wrong, fixed)
    assert rep.flagged and rep.best[:2] == "ps" and rep.best_score > rep.given_score + 0.05
    # left and right cannot be told from the image: both l/r codes are offered, the given l/r first, and the
    # message says why (issue 16, item 7)
    msg = rep.message()
    assert rep.candidates == ("psl", "psr") and "'psl' or its left-right mirror 'psr'" in msg
    assert "cannot be told apart" in msg
    mirrored = ar.Volume(brain4, SP4, orientation="asr", space="sample")  # a/p wrong, l/r stated as r
    assert search_orientation(mirrored, fixed).candidates == ("psr", "psl")

    def boom(*a, **k):
        raise AssertionError("the registration ran despite a wrong orientation")

    monkeypatch.setattr(ants_backend, "register_ants", boom)
    with pytest.raises(OrientationError, match="asl"):
        ar.register(wrong, fixed, preset="fast", **{**QUICK, "orientation_search": "error"})
    assert len(search_orientation.__doc__) > 0
    from atlasreg.registration.orientation import all_orientations
    assert len(set(all_orientations())) == 48


def test_saved_result_reloads_with_identical_mappings(affine_case, tmp_path):
    res, moving, fixed = affine_case["res"], affine_case["moving"], affine_case["fixed"]
    out = res.save(tmp_path / "reg", moving=moving, fixed=fixed)
    for name in ("transforms/moving_to_fixed.h5", "transforms/fixed_to_moving.h5", "transforms/moving_to_fixed.json",
                 "transforms/fixed_to_moving.json", "result.json", "metrics.json", "record.json",
                 "warped_moving.nii.gz", "qc/overlay.png", "qc/checkerboard.png", "qc/jacobian.png", "COMPLETE"):
        assert (out / name).exists(), name
    again = ar.RegistrationResult.load(out)
    p = _inside_points(moving.numpy(), SP4, n=300)
    q = _inside_points(fixed.numpy(), SP4, n=300, seed=1)
    np.testing.assert_allclose(again.transform.map_points(p), res.transform.map_points(p), rtol=0, atol=1e-6)
    np.testing.assert_allclose(again.transform.inverse().map_points(q), res.transform.inverse().map_points(q),
                               rtol=0, atol=1e-6)
    assert again.fixed_grid.shape == fixed.shape and again.moving_grid.space.name == "sample"
    # the ITK file maps points the same way (SimpleITK reads it)
    back = ar.load_transform(out / "transforms" / "moving_to_fixed.h5", "sample", "ccf")
    np.testing.assert_allclose(back.map_points(p), res.transform.map_points(p), atol=1e-3)
    with pytest.raises(ar.OutputExistsError):
        res.save(out)


def test_incomplete_folder_is_refused(tmp_path):
    (tmp_path / "result.json").write_text("{}")
    with pytest.raises(InputError, match="incomplete"):
        ar.RegistrationResult.load(tmp_path)


# -- bad input: a clear InputError before any long computation -------------------------------------------

@pytest.fixture
def no_backend(monkeypatch):
    from atlasreg.registration import ants_backend, orientation

    def boom(*a, **k):
        raise AssertionError("long computation started on bad input")

    monkeypatch.setattr(ants_backend, "register_ants", boom)
    monkeypatch.setattr(orientation, "search_orientation", boom)


def test_missing_voxel_size(brain4, no_backend):
    moving = ar.Volume(brain4, orientation="psl", space="sample")          # spacing left at 1
    fixed = ar.Volume(brain4, SP4, orientation="psl", space="ccf")
    with pytest.raises(InputError, match="voxel size"):
        ar.register(moving, fixed)


def test_missing_or_contradicting_orientation(brain4, no_backend):
    fixed = ar.Volume(brain4, SP4, orientation="asr", space="ccf")
    with pytest.raises(InputError, match="orientation"):
        ar.register(ar.Volume(brain4, SP4, space="sample"), fixed)
    with pytest.raises(InputError, match="orientation"):
        ar.Volume(brain4, SP4, orientation="pss", space="sample")
    with pytest.raises(InputError, match="orientation"):
        ar.Volume(brain4, SP4, orientation="psl", space=ar.Space("sample", "um", "asr"))


@pytest.mark.parametrize("fill", [0.0, 7.0])
def test_empty_or_constant_image(brain4, fill, no_backend):
    fixed = ar.Volume(brain4, SP4, orientation="psl", space="ccf")
    flat = ar.Volume(np.full(brain4.shape, fill, np.float32), SP4, orientation="psl", space="sample")
    with pytest.raises(InputError, match="empty|constant"):
        ar.register(flat, fixed)


def test_mask_that_does_not_overlap(brain4, no_backend):
    fixed = ar.Volume(brain4, SP4, orientation="psl", space="ccf")
    moving = ar.Volume(brain4, SP4, orientation="psl", space="sample")
    corner = np.zeros(brain4.shape, bool)
    corner[:3, :3, :3] = True                              # background only
    with pytest.raises(InputError, match="overlap"):
        ar.register(moving, fixed, moving_mask=corner)
    with pytest.raises(InputError, match="empty"):
        ar.register(moving, fixed, fixed_mask=np.zeros(brain4.shape, bool))
    with pytest.raises(InputError, match="shape"):
        ar.register(moving, fixed, fixed_mask=np.ones((3, 3, 3), bool))


def test_bad_preset_and_parameters(brain4, no_backend):
    fixed = ar.Volume(brain4, SP4, orientation="psl", space="ccf")
    moving = ar.Volume(brain4, SP4, orientation="psl", space="sample")
    with pytest.raises(InputError, match="preset"):
        ar.register(moving, fixed, preset="nope")
    with pytest.raises(InputError, match="unknown registration parameter"):
        ar.register(moving, fixed, syn_iteratons=(1,))
    with pytest.raises(InputError, match="one entry per level"):
        ar.register(moving, fixed, syn_iterations=(10, 10, 10), syn_shrink=(2, 1))
    with pytest.raises(InputError, match="pad"):
        ar.register(moving, fixed, pad=-100)
    with pytest.raises(InputError, match="pad must be a number"):
        ar.register(moving, fixed, pad="wide")
    with pytest.raises(InputError, match="backend"):
        ar.register(moving, fixed, backend="elastix")
    with pytest.raises(InputError, match="space"):
        ar.register(moving, ar.Volume(brain4, SP4, orientation="psl", space="sample"))


def test_presets_are_a_table():
    from atlasreg.registration.presets import PRESETS, get_preset

    assert "lightsheet-to-atlas" in PRESETS
    p = get_preset("lightsheet-to-atlas")
    assert p["syn_metric"] == "Mattes" and len(p["syn_iterations"]) == len(p["syn_shrink"])
    # same pipeline for pairs imaged alike, with a local correlation in the deformable stage
    same = get_preset("lightsheet-to-lightsheet")
    differ = {k for k in p if p[k] != same[k]}
    assert same["syn_metric"] == "CC"
    assert differ == {"syn_metric", "preset", "working_spacing", "syn_iterations", "affine_sampling"}
    assert same["working_spacing"] < p["working_spacing"] and len(same["syn_iterations"]) == len(same["syn_shrink"])
    assert same["syn_metric_mask"] and p["syn_metric_mask"]   # a partial brain's masks reach SyN with both metrics
    assert get_preset("fast", working_spacing=300)["working_spacing"] == 300


def _maps_the_affine_case_both_ways(res, A, brain4):
    """Brain points of the affine case map moving -> fixed and back within the fast preset's accuracy."""
    p_fixed = _inside_points(brain4, SP4)
    p_moving = p_fixed @ A[:3, :3].T + A[:3, 3]
    err = np.linalg.norm(res.transform.map_points(p_moving) - p_fixed, axis=1)
    err_b = np.linalg.norm(res.transform.inverse().map_points(p_fixed) - p_moving, axis=1)
    assert np.median(err) < 60 and np.percentile(err, 95) < 150, (np.median(err), np.percentile(err, 95))
    assert np.median(err_b) < 60 and np.percentile(err_b, 95) < 150


def test_finest_level_with_its_own_cc_radius_is_one_warp_both_ways(affine_case, brain4):
    """``syn_radius_finest``: the finest SyN level runs as a stage of its own (CC radius 2) in the same
    antsRegistration call; the result is still one field with ANTs' inverse, and it maps both ways."""
    A, moving, fixed = affine_case["A"], affine_case["moving"], affine_case["fixed"]
    from atlasreg.registration.ants_backend import syn_arguments
    from atlasreg.registration.presets import get_preset

    args = syn_arguments(get_preset("fast", **{**QUICK, "syn_radius_finest": 2}), "F", "M")
    assert args.count("-t") == 2 and "CC[F,M,1,2]" in args
    i = args.index("CC[F,M,1,2]")   # the finest level alone: its iterations, shrink 1
    assert args[i + 4].startswith("[15,") and args[i + 8] == "1" and "CC[F,M,1,1]" in args
    assert args[i - 6].startswith("[30x0,") and args[i - 2] == "2x1"   # the first stage ends on the same grid
    res = ar.register(moving, fixed, preset="fast", **{**QUICK, "syn_radius_finest": 2})
    assert len(_fields(res.transform)) == 1
    _maps_the_affine_case_both_ways(res, A, brain4)
    with pytest.raises(InputError, match="syn_radius_finest"):
        get_preset("fast", syn_radius_finest=-1)


def test_finest_level_with_its_own_metric(affine_case, brain4):
    """``syn_metric_finest``: Mattes on the coarse levels, CC on the finest, in one warp that maps both ways;
    the same metric named twice is one stage, and an unknown metric is refused."""
    A, moving, fixed = affine_case["A"], affine_case["moving"], affine_case["fixed"]
    from atlasreg.registration.ants_backend import syn_arguments, syn_levels
    from atlasreg.registration.presets import get_preset

    p = get_preset("fast", **{**QUICK, "syn_metric": "Mattes", "syn_metric_finest": "CC"})
    assert [(lv[0], lv[3]) for lv in syn_levels(p)] == [([30, 0], "Mattes"), ([15], "CC")]
    args = syn_arguments(p, "F", "M")
    assert args[args.index("-m") + 1] == "Mattes[F,M,1,32]" and "CC[F,M,1,1]" in args
    assert len(syn_levels(get_preset("fast", **{**QUICK, "syn_metric_finest": "CC"}))) == 1   # CC already
    res = ar.register(moving, fixed, preset="fast", **{**QUICK, "syn_metric": "Mattes", "syn_metric_finest": "CC"})
    assert len(_fields(res.transform)) == 1
    _maps_the_affine_case_both_ways(res, A, brain4)
    with pytest.raises(InputError, match="syn_metric_finest"):
        get_preset("fast", syn_metric_finest="NCC")


def test_sitk_backend_same_call(affine_case, brain4, tmp_path):
    """The SimpleITK backend (affine + B-spline) behind the same call, same result type and direction."""
    A, moving, fixed = affine_case["A"], affine_case["moving"], affine_case["fixed"]
    res = ar.register(moving, fixed, preset="fast", backend="sitk",
                      **{**QUICK, "bspline_iterations": (15, 10), "bspline_shrink": (2, 1), "bspline_smooth": (1, 0),
                         "bspline_mesh_spacing": 1600.0})
    assert isinstance(res, ar.RegistrationResult) and res.backend == "sitk"
    p_fixed = _inside_points(brain4, SP4)
    p_moving = p_fixed @ A[:3, :3].T + A[:3, 3]
    err = np.linalg.norm(res.transform.map_points(p_moving) - p_fixed, axis=1)
    assert np.median(err) < 80, np.median(err)
    err_b = np.linalg.norm(res.transform.inverse().map_points(p_fixed) - p_moving, axis=1)
    assert np.median(err_b) < 80
    # the B-spline's inverse, sampled: nodes without one get zero displacement knowingly, counted in info
    inv = res.info["inverse_field"]
    assert inv["nodes"] > 0 and inv["zero_filled_nodes"] == inv["off_grid_nodes"] + inv["failed_nodes"]
    # so the ITK file holds what the transform in memory does
    saved = ar.load_transform(ar.save_transform(res.transform, tmp_path / "m2f.h5"))
    np.testing.assert_allclose(saved.map_points(p_moving), res.transform.map_points(p_moving), atol=1e-3)


def test_cli_register_then_points_and_warp(brain4, tmp_path):
    import pandas as pd
    import tifffile
    from typer.testing import CliRunner

    from atlasreg.cli import app

    A = _known_affine(brain4.shape, SP4)
    tifffile.imwrite(tmp_path / "sample.tif", _affine_moving(brain4, SP4, A))
    tifffile.imwrite(tmp_path / "fixed.tif", brain4)
    sets = []
    for k, v in QUICK.items():
        if k != "orientation_search":
            sets += ["--set", f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"]
    runner = CliRunner()
    r = runner.invoke(app, ["register", str(tmp_path / "sample.tif"), "--voxel-size", "200", "160", "160",
                            "--orientation", "psl", "--fixed", str(tmp_path / "fixed.tif"), "--fixed-voxel-size",
                            "200", "160", "160", "--fixed-orientation", "psl", "--preset", "fast", "--quiet",
                            "--orientation-check", "off", "-o", str(tmp_path / "reg"), *sets])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "reg" / "COMPLETE").exists()
    p_fixed = _inside_points(brain4, SP4, n=50)
    p_moving = p_fixed @ A[:3, :3].T + A[:3, 3]
    pd.DataFrame(p_moving, columns=["x", "y", "z"]).to_csv(tmp_path / "cells.csv", index=False)
    r = runner.invoke(app, ["points", str(tmp_path / "reg"), str(tmp_path / "cells.csv"), "-o",
                            str(tmp_path / "cells_fixed.csv")])
    assert r.exit_code == 0, r.output
    got = pd.read_csv(tmp_path / "cells_fixed.csv")[["x", "y", "z"]].to_numpy()
    assert np.median(np.linalg.norm(got - p_fixed, axis=1)) < 60
    # the same cells as voxel indices (z, y, x columns) with a text column: the text is kept, the voxels of the
    # fixed grid come out, and they are the physical answer in voxels; and back to the sample with --to moving
    res = ar.RegistrationResult.load(tmp_path / "reg")
    vox = res.moving_grid.physical_to_index(p_moving)
    pd.DataFrame({"name": [f"cell, {i}" for i in range(len(vox))], "k": vox[:, 0], "j": vox[:, 1],
                  "i": vox[:, 2]}).to_csv(tmp_path / "cells_vox.csv", index=False)
    r = runner.invoke(app, ["points", str(tmp_path / "reg"), str(tmp_path / "cells_vox.csv"), "--voxels",
                            "--columns", "k,j,i", "-o", str(tmp_path / "cells_vox_fixed.csv")])
    assert r.exit_code == 0, r.output
    back = pd.read_csv(tmp_path / "cells_vox_fixed.csv")
    assert back["name"].tolist() == [f"cell, {i}" for i in range(len(vox))]
    assert np.allclose(back[["k", "j", "i"]].to_numpy(), res.fixed_grid.physical_to_index(got), atol=1e-9)
    r = runner.invoke(app, ["points", str(tmp_path / "reg"), str(tmp_path / "cells_fixed.csv"), "--to", "moving",
                            "-o", str(tmp_path / "cells_back.csv")])
    assert r.exit_code == 0, r.output
    again = pd.read_csv(tmp_path / "cells_back.csv")[["x", "y", "z"]].to_numpy()
    assert np.allclose(again, res.transform.inverse().map_points(got), atol=1e-6)
    assert np.median(np.linalg.norm(again - p_moving, axis=1)) < 10
    r = runner.invoke(app, ["warp", str(tmp_path / "reg"), str(tmp_path / "sample.tif"), "--voxel-size", "200",
                            "160", "160", "-o", str(tmp_path / "w.nii.gz")])
    assert r.exit_code == 0, r.output
    w = ar.read_volume(tmp_path / "w.nii.gz")
    assert w.shape == brain4.shape
    # a complete output folder is not overwritten without --force
    r = runner.invoke(app, ["register", str(tmp_path / "sample.tif"), "--voxel-size", "200", "160", "160",
                            "--orientation", "psl", "--fixed", str(tmp_path / "fixed.tif"), "--fixed-voxel-size",
                            "200", "160", "160", "--fixed-orientation", "psl", "-o", str(tmp_path / "reg")])
    assert r.exit_code == 4
    # bad input at the CLI: a clear message and exit code 2
    r = runner.invoke(app, ["register", str(tmp_path / "sample.tif"), "--orientation", "pxl", "--voxel-size", "200",
                            "160", "160", "--fixed", str(tmp_path / "fixed.tif"), "-o", str(tmp_path / "r2")])
    assert r.exit_code == 2 and "orientation" in r.output


def test_cli_register_to_atlas_writes_the_whole_result_folder(brain4, data_dir, tmp_path, monkeypatch):
    """`atlasreg register SAMPLE --atlas ATLAS`: the real brain (psl) onto the real 200 µm CCF (asr); the folder
    holds what the issue lists, and its files agree with each other and with the inputs."""
    import hashlib
    import json

    import pandas as pd
    import tifffile
    from typer.testing import CliRunner

    from atlasreg.cli import app

    monkeypatch.setenv("ATLASREG_DATA", str(data_dir))          # the atlas by its manifest name, from the mirror
    atlas_npz = data_dir / "atlas" / "allen_mouse_200um.npz"
    tifffile.imwrite(tmp_path / "sample.tif", brain4)
    out = tmp_path / "reg"
    r = CliRunner().invoke(app, ["register", str(tmp_path / "sample.tif"), "--voxel-size", *map(str, SP4),
                                 "--orientation", "psl", "--atlas", "allen_mouse_200um", "--preset", "affine",
                                 "--set", "working_spacing=400", "--set", "threads=2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    from _demo_run import _drop_closed_log_handlers

    _drop_closed_log_handlers()
    # stderr is not a terminal here: one line per stage, as in a log file (issue 16, item 15)
    for stage in ("working images", "affine", "save", "annotation on sample", "qc figures"):
        assert re.search(rf"^registration: {stage} done in [0-9.]+ s$", r.stderr, re.M), (stage, r.stderr)
    for d in ("moving_to_fixed", "fixed_to_moving"):               # transforms, both directions, both formats
        assert (out / "transforms" / f"{d}.h5").stat().st_size > 0
        assert json.loads((out / "transforms" / f"{d}.json").read_text())
    warped = ar.read_volume(out / "warped_moving.nii.gz")           # the sample in the atlas grid
    atlas = np.load(atlas_npz)
    assert warped.shape == atlas["reference"].shape
    ann = ar.read_volume(out / "annotation_in_moving.nii.gz")       # the atlas annotation on the sample grid
    assert ann.shape == brain4.shape and np.allclose(ann.voxel_size, SP4)
    labels = np.asarray(ann.numpy())
    assert set(np.unique(labels)) <= set(np.unique(atlas["annotation"]))   # nearest neighbour: real ids only
    brain = brain4 > np.percentile(brain4, 70)
    assert (labels[brain] > 0).mean() > 0.8                        # the sample's brain gets atlas labels
    vols = pd.read_csv(out / "region_volumes.csv")                 # per-region volumes, named
    assert {"id", "acronym", "name", "voxels", "volume_mm3"} <= set(vols.columns)
    voxel_mm3 = np.prod(np.asarray(SP4) / 1000)
    assert vols["voxels"].sum() == (labels > 0).sum()
    assert np.isclose(vols["volume_mm3"].sum(), (labels > 0).sum() * voxel_mm3, rtol=1e-3)  # 3 digits per row
    assert 200 < vols["volume_mm3"].sum() < 800                    # a mouse brain is ~500 mm³
    for fig in ("overlay", "checkerboard", "jacobian"):             # QC figures
        assert (out / "qc" / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ncc_after"] > metrics["ncc_initial"] and "jacobian_min" in metrics
    record = json.loads((out / "record.json").read_text())         # inputs (sha256), parameters, versions
    for role, path in (("sample", tmp_path / "sample.tif"), ("atlas_reference", atlas_npz),
                       ("atlas_ontology", data_dir / "atlas" / "allen_ontology.json")):
        assert record["inputs"][role]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["params"]["working_spacing"] == 400 and record["params"]["preset"] == "affine"
    assert record["versions"]["atlasreg"] == ar.__version__


def test_progress_reports_iterations_per_level_and_nothing_leaks(brain4, capfd, caplog):
    """Issue 16 item 15: iterations done / total per level reach the callback and the log; ANTs' own verbose
    output (read from its stdout to count them) never reaches the user's stdout, and stdout works afterwards."""
    import logging

    from scipy import ndimage as ndi

    moving = ar.Volume(brain4, SP4, orientation="psl", space="sample")
    fixed = ar.Volume(ndi.shift(brain4, (1.5, -1.0, 0.5), order=1), SP4, orientation="psl", space="fixed")
    events = []
    with caplog.at_level(logging.INFO, logger="atlasreg.registration"):
        ar.register(moving, fixed, preset="fast", progress=lambda s, st: events.append((s, st)),
                    **{**QUICK, "syn_iterations": (4, 3), "affine_iterations": (5, 4)})
    print("still printing")
    out = capfd.readouterr().out
    assert "DIAGNOSTIC" not in out and "still printing" in out
    iters = [(s, st) for s, st in events if st.startswith("level ") and "iteration " in st]
    for stage, totals in (("affine", (5, 4)), ("syn", (4, 3))):
        mine = [st for s, st in iters if s == stage]
        assert f"level 1/2, iteration 1/{totals[0]}" in mine, (stage, mine[:5])
        assert any(st.startswith(f"level 2/2, iteration ") and st.endswith(f"/{totals[1]}") for st in mine)
        ends = [st for s, st in events if s == stage and " done after " in st]
        assert [e.split(" done")[0] for e in ends] == ["level 1/2", "level 2/2"], ends
        # counts never pass the level's total, and the stage's own "done" comes after its levels
        assert all(int(st.split("iteration ")[1].split("/")[0]) <= int(st.split("/")[-1]) for st in mine)
        assert events.index((stage, "done")) > events.index((stage, ends[-1]))
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("registration: syn level 2/2 done after ") for m in logged), logged[-10:]


def test_tissue_cut_by_the_moving_images_edge_is_not_matched_with_zeros(brain4):
    """The sample's field of view ends inside the brain (here 1.1 mm of it is shifted out of the image): beyond its
    edge there is nothing to compare with, and ANTs would compare the fixed tissue there with zeros, dragging the
    map near the edge. ``moving_fov_mask`` (an option, off by default) keeps those points out of the metrics."""
    A = _known_affine(brain4.shape, SP4, deg=4.0, scale=(1.0, 1.0, 1.0), shift=(0.0, 0.0, 1100.0))
    moving = ar.Volume(_affine_moving(brain4, SP4, A), SP4, orientation="psl", space="sample")
    fixed = ar.Volume(brain4, SP4, orientation="psl", space="ccf")
    p_fixed = _inside_points(brain4, SP4, n=3000, seed=1)
    p_moving = p_fixed @ A[:3, :3].T + A[:3, 3]
    edge = (np.asarray(brain4.shape) - 1) * np.asarray(SP4)
    near = (p_moving[:, 2] > edge[2] - 800.0) & (p_moving[:, 2] <= edge[2] - 200.0)  # inside, near the cut edge
    assert near.sum() > 50
    errs = {}
    for fov in (True, False):
        res = ar.register(moving, fixed, preset="fast", **{**QUICK, "moving_fov_mask": fov})
        assert res.params["moving_fov_mask"] is fov
        errs[fov] = np.linalg.norm(res.transform.map_points(p_moving[near]) - p_fixed[near], axis=1)
    start = np.median(np.linalg.norm(p_moving[near] - p_fixed[near], axis=1))
    got = {k: float(np.median(v)) for k, v in errs.items()}
    assert got[True] < 0.75 * got[False] and got[True] < 0.3 * start, (got, start)
