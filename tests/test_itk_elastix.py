"""ITK B-splines, ITK transform lists and elastix parameter files, each against the other tool's own mapping:
SimpleITK's ``TransformPoint`` on files SimpleITK wrote, ITK's ``transformread`` on lists, transformix on files
itk-elastix wrote in the test, and the real nitransforms test files in interop/itk_nitransforms/."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from atlasreg import BSplineTransform, InputError, load_transform, load_transforms, save_transform

ITK_FILES = "interop/itk_nitransforms"


def _sitk_points(tx, pts):
    return np.array([tx.TransformPoint(tuple(map(float, p))) for p in pts])


@pytest.fixture(scope="module")
def bspline():
    """A SimpleITK B-spline on an oblique grid, and points inside, near and outside its mesh."""
    rng = np.random.default_rng(7)
    img = sitk.Image([20, 16, 12], sitk.sitkFloat32)
    img.SetSpacing((2.0, 3.0, 4.0))
    img.SetOrigin((10.0, -5.0, 3.0))
    img.SetDirection(sitk.VersorTransform((0.3, 0.2, 0.9), 0.4).GetMatrix())
    tx = sitk.BSplineTransformInitializer(img, [4, 3, 5], 3)
    tx.SetParameters(tuple(rng.normal(0, 2.0, len(tx.GetParameters()))))
    # Continuous indices from well outside to well inside the image (the mesh reaches one cell beyond it).
    idx = rng.uniform(-0.3, 1.3, (1500, 3)) * (np.array([20, 16, 12]) - 1)
    pts = np.array([img.TransformContinuousIndexToPhysicalPoint(tuple(i)) for i in idx])
    return tx, pts


@pytest.mark.parametrize("suffix", [".tfm", ".txt", ".h5", ".mat"])
def test_bspline_files_read_and_write_as_simpleitk_maps(tmp_path, bspline, suffix):
    tx, pts = bspline
    want = _sitk_points(tx, pts)
    moved = np.abs(want - pts).max(axis=1) > 0
    assert 0.2 < moved.mean() < 0.95  # points both inside and outside the mesh's support
    path = tmp_path / f"bspline{suffix}"
    sitk.WriteTransform(tx, str(path))
    T = load_transform(path, src="fixed", dst="moving")
    assert isinstance(T, BSplineTransform) and T.shape == tuple(int(v) for v in tx.GetFixedParameters()[:3])
    np.testing.assert_allclose(T.map_points(pts), want, rtol=0, atol=1e-9)
    # atlasreg writes it back; SimpleITK reads the same map.
    out = save_transform(T, tmp_path / f"back{suffix}")
    np.testing.assert_allclose(_sitk_points(sitk.ReadTransform(str(out)), pts), want, rtol=0, atol=1e-9)
    # outside="nan" marks exactly the points ITK leaves in place because their support leaves the grid.
    N = load_transform(path, src="fixed", dst="moving", outside="nan").map_points(pts)
    assert np.isnan(N).any(axis=1).sum() >= (~moved).sum() - 2
    np.testing.assert_allclose(N[~np.isnan(N[:, 0])], want[~np.isnan(N[:, 0])], rtol=0, atol=1e-9)


@pytest.mark.parametrize("suffix", [".h5", ".tfm"])
def test_affine_then_bspline_composite(tmp_path, bspline, suffix):
    tx, pts = bspline
    rigid = sitk.Euler3DTransform((20.0, 10.0, 15.0), 0.1, -0.2, 0.05, (1.0, -2.0, 0.5))
    comp = sitk.CompositeTransform([sitk.Transform(rigid), sitk.Transform(tx)])  # applies tx first, then rigid
    sitk.WriteTransform(comp, str(tmp_path / f"c{suffix}"))
    T = load_transform(tmp_path / f"c{suffix}", src="fixed", dst="moving")
    want = _sitk_points(comp, pts)
    np.testing.assert_allclose(T.map_points(pts), want, rtol=0, atol=1e-9)
    back = save_transform(T, tmp_path / f"back{suffix}")
    np.testing.assert_allclose(_sitk_points(sitk.ReadTransform(str(back)), pts), want, rtol=0, atol=1e-9)


def test_bspline_blockwise_warp_equals_simpleitk_resample(tmp_path, bspline):
    """The blockwise (dask) warp through a B-spline read from SimpleITK's file equals SimpleITK's Resample."""
    from atlasreg import Grid, Space, Volume
    from atlasreg.distributed import warp_blockwise

    tx, _ = bspline
    sitk.WriteTransform(tx, str(tmp_path / "b.h5"))
    T = load_transform(tmp_path / "b.h5", src="fixed", dst="moving")
    ref_img = sitk.Image([20, 16, 12], sitk.sitkFloat32)
    ref_img.SetSpacing((2.0, 3.0, 4.0))
    ref_img.SetOrigin((10.0, -5.0, 3.0))
    data = np.random.default_rng(4).random((20, 16, 12)).astype(np.float32)
    D = np.asarray(tx.GetFixedParameters()[9:18]).reshape(3, 3)  # the moving image on the mesh's oblique axes
    vol = Volume(data, voxel_size=(2, 3, 4), origin=(10, -5, 3), direction=D, space="moving")
    grid = Grid((20, 16, 12), (2, 3, 4), Space("fixed"), origin=(10, -5, 3))  # OME-Zarr output: axis-aligned
    mimg = sitk.GetImageFromArray(data.transpose(2, 1, 0))
    mimg.SetSpacing((2.0, 3.0, 4.0))
    mimg.SetOrigin((10.0, -5.0, 3.0))
    mimg.SetDirection(tuple(D.ravel()))
    want = sitk.GetArrayFromImage(sitk.Resample(mimg, ref_img, tx, sitk.sitkLinear, 0.0)).transpose(2, 1, 0)
    out = warp_blockwise(vol, T, grid, tmp_path / "w.zarr", chunks=(8, 8, 8))
    np.testing.assert_allclose(np.asarray(out.volume.data), want, rtol=0, atol=1e-5)
    assert T.token() == load_transform(tmp_path / "b.h5", src="fixed", dst="moving").token()


def test_bspline_inverse_is_exact_or_nan(bspline):
    """The inverse (one damped-Newton solver, the spline's analytic Jacobian) maps SimpleITK's own outputs back
    to tolerance; a spline that folds gives NaN where it folds, counted, never a wrong point."""
    from atlasreg import Space
    from atlasreg.transforms.sitk_bridge import bspline_from_sitk

    tx, pts = bspline
    T = bspline_from_sitk(tx, Space("fixed"), Space("moving"))
    y = _sitk_points(tx, pts)
    inv = T.inverse()
    back = inv.map_points(y)
    ok = ~np.isnan(back[:, 0])
    assert ok.mean() > 0.98 and inv.last_report.converged == ok.sum()
    # Every point returned maps forward onto its target (SimpleITK's TransformPoint as the judge) ...
    np.testing.assert_allclose(_sitk_points(tx, back[ok]), y[ok], rtol=0, atol=1e-5)
    # ... and is the original point, except where ITK's rule makes the map many-to-one: at the edge of the
    # support a point moved by the spline can land where points are left in place.
    same = np.abs(back - pts).max(axis=1) < 1e-5
    assert same.mean() > 0.95
    assert inv.inverse() is T
    # Coefficients of 40 on a mesh of ~10-16 spacing fold the map: those points are NaN and reported.
    fold = bspline_from_sitk(tx, Space("fixed"), Space("moving"))
    fold.coefficients = fold.coefficients * 20.0
    finv = fold.inverse()
    got = finv.map_points(fold.map_points(pts))
    good = ~np.isnan(got[:, 0])
    resid = np.abs(fold.map_points(got[good]) - fold.map_points(pts)[good]).max()
    assert resid <= finv.tol * 10 and finv.last_report.failed + finv.last_report.converged == len(pts)
    assert finv.last_report.failed == int((~good).sum()) > 0


def test_nitransforms_affines_equal_simpleitk(data_dir):
    d = data_dir / ITK_FILES
    pts = np.random.default_rng(1).uniform(-80, 80, (50, 3))
    for name in ("affine-LPS.itk.tfm", "affine-RAS.itk.tfm", "affine-oblique.itk.tfm",
                 "from-scanner_to-bold_mode-image.tfm", "affine-antsComposite.h5"):
        T = load_transform(d / name, src="a", dst="b")
        np.testing.assert_allclose(T.map_points(pts), _sitk_points(sitk.ReadTransform(str(d / name)), pts),
                                   rtol=0, atol=1e-9, err_msg=name)
        assert len(load_transforms(d / name)) == 1
    # In nitransforms' repository this file is a symbolic link; checked out without links it is its target's name.
    with pytest.raises(InputError, match="symbolic link") as exc:
        load_transform(d / "affine-LAS.itk.tfm")
    assert "affine-LAS.itk.tfm" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# With ITK's own Python wrapping (itk-elastix, in the `test` extra): transform lists and elastix.
# Loading ITK's wrapping costs ~15 s of CPU once per session; the oracle is worth it.
# ---------------------------------------------------------------------------------------------
import itk  # noqa: E402  (itk-elastix is in the test extra: these oracles never skip)


def test_itk_list_refused_by_load_transform_and_read_by_load_transforms(data_dir):
    """Without ITK's wrapping: the real list, each entry equal to SimpleITK reading that entry on its own."""
    path = data_dir / ITK_FILES / "itktflist.tfm"
    with pytest.raises(InputError, match=r"list of 9 separate transforms.*position 0 to 8.*load_transforms") as exc:
        load_transform(path)
    assert "itktflist.tfm" in str(exc.value)
    ours = load_transforms(path, src="a", dst="b")
    assert len(ours) == 9
    pts = np.random.default_rng(2).uniform(-20, 20, (30, 3))
    # SimpleITK reads the first entry of a list; the list's first is the identity about (10, 10, 10).
    np.testing.assert_allclose(ours[0].map_points(pts), _sitk_points(sitk.ReadTransform(str(path)), pts),
                               rtol=0, atol=1e-9)
    assert not np.allclose(ours[4].map_points(pts), pts)


def _itk_points(tx, pts):
    return np.array([list(tx.TransformPoint([float(v) for v in p])) for p in pts])


def test_itk_transform_lists_equal_itk_transformread(data_dir, tmp_path):
    path = data_dir / ITK_FILES / "itktflist.tfm"
    pts = np.random.default_rng(2).uniform(-20, 20, (30, 3))
    ours = load_transforms(path, src="a", dst="b")
    theirs = itk.transformread(str(path))  # ITK's reader returns the list
    assert len(ours) == len(theirs) == 9
    for i, (T, t) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(T.map_points(pts), _itk_points(t, pts), rtol=0, atol=1e-5, err_msg=str(i))
    # The same list written by ITK as HDF5.
    itk.transformwrite(theirs[3:6], str(tmp_path / "list.h5"))
    again = load_transforms(tmp_path / "list.h5", src="a", dst="b")
    assert len(again) == 3
    for T, t in zip(again, theirs[3:6]):
        np.testing.assert_allclose(T.map_points(pts), _itk_points(t, pts), rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="list of 3"):
        load_transform(tmp_path / "list.h5")


def _read_transformix(path) -> tuple[np.ndarray, np.ndarray]:
    inp, out = [], []
    for line in path.read_text().splitlines():
        inp.append([float(v) for v in line.split("InputPoint = [")[1].split("]")[0].split()])
        out.append([float(v) for v in line.split("OutputPoint = [")[1].split("]")[0].split()])
    return np.array(inp), np.array(out)


@pytest.fixture(scope="module")
def elastix_run(tmp_path_factory):
    """itk-elastix registers two small images (rigid, affine, B-spline); transformix maps points with each stage."""
    out = tmp_path_factory.mktemp("elastix")
    z, y, x = np.mgrid[0:24, 0:20, 0:16].astype(np.float32)

    def blobs(shift):
        return sum(a * np.exp(-((x - cx - shift[0]) ** 2 + (y - cy - shift[1]) ** 2 + (z - cz - shift[2]) ** 2) / 30)
                   for a, cx, cy, cz in ((1.0, 8, 10, 12), (0.5, 5, 6, 8), (0.7, 11, 14, 16))).astype(np.float32)

    fixed, moving = itk.image_from_array(blobs((0, 0, 0))), itk.image_from_array(blobs((1, 1, -1)))
    for im, origin in ((fixed, (1.0, 2.0, 3.0)), (moving, (1.5, 2.0, 2.0))):
        im.SetSpacing((0.5, 0.6, 0.7))
        im.SetOrigin(origin)
    po = itk.ParameterObject.New()
    for kind in ("rigid", "affine", "bspline"):
        m = po.GetDefaultParameterMap(kind, 1)
        m["MaximumNumberOfIterations"] = ["20"]
        if kind == "bspline":
            m["FinalGridSpacingInPhysicalUnits"] = ["3.0"]
        po.AddParameterMap(m)
    _, result = itk.elastix_registration_method(fixed, moving, parameter_object=po, output_directory=str(out),
                                                log_to_console=False)
    rng = np.random.default_rng(3)
    pts = np.concatenate([rng.uniform([1, 2, 3], [9, 14, 19], (150, 3)),        # inside the fixed image
                          rng.uniform([-10, -10, -10], [25, 25, 35], (150, 3))])  # and well beyond the grid
    (out / "points.txt").write_text("point\n%d\n" % len(pts) + "".join("%.17g %.17g %.17g\n" % tuple(p) for p in pts))
    mapped = {}
    for n in (1, 2, 3):  # transformix with the first n stages (what TransformParameters.{n-1}.txt chains)
        stages = itk.ParameterObject.New()
        for i in range(n):
            stages.AddParameterMap(result.GetParameterMap(i))
        d = out / f"transformix{n}"
        d.mkdir()
        itk.transformix_filter(moving, stages, fixed_point_set_file_name=str(out / "points.txt"),
                               output_directory=str(d), log_to_console=False)
        inp, got = _read_transformix(d / "outputpoints.txt")
        mapped[n] = (inp, got)
    return out, mapped


def test_elastix_parameter_files_equal_transformix(elastix_run, tmp_path):
    out, mapped = elastix_run
    for n in (1, 2, 3):
        path = out / f"TransformParameters.{n - 1}.txt"
        assert (n == 1) == ('"NoInitialTransform"' in path.read_text())
        inp, want = mapped[n]
        T = load_transform(path, src="fixed", dst="moving")
        # transformix prints 6 decimals
        np.testing.assert_allclose(T.map_points(inp), want, rtol=0, atol=2e-6, err_msg=path.name)
        assert np.abs(want - inp).max() > 0.1  # the transform moves points
    assert len(load_transforms(out / "TransformParameters.2.txt", src="fixed", dst="moving")) == 1
    # elastix records no unit: images registered in mm, points in µm.
    from atlasreg import Space

    inp, want = mapped[3]
    T_um = load_transform(out / "TransformParameters.2.txt", src=Space("fixed", "um"), dst=Space("moving", "um"),
                          file_unit="mm")
    np.testing.assert_allclose(T_um.map_points(inp * 1000), want * 1000, rtol=0, atol=2e-3)
    with pytest.raises(InputError, match="state the file unit"):
        load_transform(out / "TransformParameters.2.txt", src=Space("fixed", "um"), dst=Space("moving", "mm"))
    # A copied result folder: elastix recorded the initial transform's absolute path, which is elsewhere.
    moved = tmp_path / "moved"
    moved.mkdir()
    for i in range(3):
        shutil.copy(out / f"TransformParameters.{i}.txt", moved)
    with pytest.raises(InputError, match="not in the folder.*lies beside it") as exc:
        load_transform(moved / "TransformParameters.2.txt", src="fixed", dst="moving")
    assert "TransformParameters.2.txt" in str(exc.value)
    for i in (1, 2):
        p = moved / f"TransformParameters.{i}.txt"
        p.write_text(p.read_text().replace(str(out) + "/", ""))
    T = load_transform(moved / "TransformParameters.2.txt", src="fixed", dst="moving")
    np.testing.assert_allclose(T.map_points(mapped[3][0]), mapped[3][1], rtol=0, atol=2e-6)
