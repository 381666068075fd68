"""Volume readers/writers on the real light-sheet brain: geometry contract, round trips, laziness, validation."""
from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import h5py
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
import zarr
from dask.callbacks import Callback

import atlasreg as ar
from atlasreg.errors import InputError, OutputExistsError
from atlasreg.io.atomic import atomic_path
from atlasreg.io.ome_zarr import level_factors

BRAIN = "lightsheet/brain_psl_50x40x40um.tif"
VS = (50.0, 40.0, 40.0)


@pytest.fixture(scope="session")
def brain_path(data_dir) -> Path:
    return data_dir / BRAIN


@pytest.fixture(scope="session")
def brain(brain_path) -> ar.Volume:
    return ar.read_volume(brain_path, voxel_size=VS, orientation="psl", space="sample")


@pytest.fixture(scope="session")
def crop(brain) -> np.ndarray:
    """A real block of tissue, small enough for many writes."""
    return np.ascontiguousarray(brain.numpy()[100:140, 60:90, 110:150])


class TaskCounter(Callback):
    """Counts executed dask tasks and the largest array a task produced."""

    def __init__(self):
        super().__init__()
        self.n = 0
        self.max_nbytes = 0

    def _posttask(self, key, result, dsk, state, id):
        self.n += 1
        self.max_nbytes = max(self.max_nbytes, getattr(result, "nbytes", 0))


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- the TIFF and the CONVENTIONS worked example ------------------------------------------------------------

def test_worked_example(brain, brain_path):
    assert brain.shape == (270, 193, 271) and brain.dtype == np.uint16
    assert isinstance(brain.data, np.ndarray)
    assert brain.space == ar.Space("sample", "um", "psl")
    np.testing.assert_allclose(brain.index_to_physical([[10, 0, 5]]), [[500.0, 0.0, 200.0]])
    np.testing.assert_array_equal(brain.numpy(), tifffile.imread(brain_path))  # the array as read
    np.testing.assert_allclose(brain.origin, 0)
    np.testing.assert_allclose(brain.direction, np.eye(3))


def test_tiff_needs_voxel_size(brain_path):
    with pytest.raises(InputError, match="voxel_size") as e:
        ar.read_volume(brain_path)
    assert str(brain_path) in str(e.value) and "anisotropic" in str(e.value)
    for bad in [(50, 0, 40), (50, -40, 40), (np.nan, 40, 40), (50, 40), "fifty"]:
        with pytest.raises(InputError, match="voxel size"):
            ar.read_volume(brain_path, voxel_size=bad)


def test_tiff_scalar_voxel_size_and_unit(brain_path):
    v = ar.read_volume(brain_path, voxel_size=0.05, unit="mm", space="s_mm")
    assert v.unit == "mm"
    np.testing.assert_allclose(v.voxel_size, [0.05] * 3)
    with pytest.raises(InputError, match="orientation"):
        ar.read_volume(brain_path, voxel_size=VS, orientation="pxl")


# -- round trips ------------------------------------------------------------------------------------------

ROUND_TRIPS = [(".nii", {}), (".nii.gz", {}), (".nrrd", {}), (".tif", {}), (".h5", {}),
               (".ome.zarr", {"ngff_version": "0.4"}), (".ome.zarr", {"ngff_version": "0.5"})]


@pytest.mark.parametrize("suffix,kw", ROUND_TRIPS, ids=[s + str(k.get("ngff_version", "")) for s, k in ROUND_TRIPS])
def test_round_trip_lossless(brain, tmp_path, suffix, kw):
    out = ar.write_volume(brain, tmp_path / f"brain{suffix}", **kw)
    assert out == tmp_path / f"brain{suffix}" and out.exists()
    assert _siblings(tmp_path) == [out.name]  # no temporary left behind
    back = ar.read_volume(out)
    assert back.shape == brain.shape and back.dtype == brain.dtype
    np.testing.assert_array_equal(back.numpy(), brain.numpy())
    # NIfTI stores spacing as float32: 40 µm comes back as 39.9999991 µm
    np.testing.assert_allclose(back.voxel_size, brain.voxel_size, rtol=1e-7)
    np.testing.assert_allclose(back.origin, brain.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, brain.direction, atol=1e-12)
    assert back.space == brain.space  # name, unit and orientation recorded in the file
    idx = np.array([[10, 0, 5], [269, 192, 270], [0, 100, 33]])
    np.testing.assert_allclose(back.index_to_physical(idx), brain.index_to_physical(idx), rtol=1e-7, atol=1e-6)


@pytest.mark.parametrize("dtype", ["bool", "int8", "uint16", "int32", "uint32", "int64", "uint64", "float16",
                                   "float32", "float64"])
def test_dtypes_round_trip(crop, tmp_path, dtype):
    a = (crop[:8, :9, :10].astype(np.int64) - 300).astype(dtype)
    if dtype.startswith("u"):
        a = crop[:8, :9, :10].astype(dtype)
    for suffix in (".nii.gz", ".nrrd", ".tif", ".h5", ".ome.zarr"):
        back = ar.read_volume(ar.write_volume(ar.Volume(a, VS), tmp_path / f"d{suffix}")).numpy()
        np.testing.assert_array_equal(back, a)
        widened = {"bool": np.uint8, "float16": np.float32}.get(dtype) if suffix in (".nii.gz", ".nrrd") else None
        assert back.dtype == (widened or a.dtype), suffix


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_simpleitk_reads_same_positions(brain, tmp_path, suffix):
    out = ar.write_volume(brain, tmp_path / f"b{suffix}")
    img = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img).transpose(2, 1, 0), brain.numpy())
    rng = np.random.default_rng(0)
    idx = np.column_stack([rng.integers(0, n, 50) for n in brain.shape])
    ours = ar.read_volume(out).index_to_physical(idx)
    theirs = np.array([img.TransformIndexToPhysicalPoint([int(v) for v in i]) for i in idx]) * 1000.0
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    np.testing.assert_allclose(brain.index_to_physical(idx), theirs, rtol=1e-7, atol=1e-4)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".h5", ".tif"])
def test_rotated_volume_round_trip(crop, tmp_path, suffix):
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.diag([1.0, 1.0, -1.0])  # rotation and a flip
    vol = ar.Volume(crop, voxel_size=VS, origin=(1250.0, -3000.5, 742.25), direction=rot, space="tilted",
                    orientation="psl")
    out = ar.write_volume(vol, tmp_path / f"t{suffix}")
    back = ar.read_volume(out)
    np.testing.assert_array_equal(back.numpy(), crop)
    np.testing.assert_allclose(back.direction, rot, atol=1e-6)
    np.testing.assert_allclose(back.origin, vol.origin, rtol=1e-6)
    idx = np.array([[0, 0, 0], [39, 29, 39], [7, 3, 21]])
    np.testing.assert_allclose(back.index_to_physical(idx), vol.index_to_physical(idx), atol=2e-3)
    if suffix in (".nii.gz", ".nrrd"):
        img = sitk.ReadImage(str(out))
        theirs = np.array([img.TransformIndexToPhysicalPoint([int(v) for v in i]) for i in idx]) * 1000.0
        np.testing.assert_allclose(theirs, vol.index_to_physical(idx), atol=2e-3)


def test_nifti_unit_conversion(crop, tmp_path):
    em = ar.Volume(crop, voxel_size=(40.0, 4.0, 4.0), origin=(1000.0, 0.0, 0.0), space=ar.Space("em", "nm"))
    out = ar.write_volume(em, tmp_path / "em.nii")
    img = sitk.ReadImage(str(out))
    np.testing.assert_allclose(img.GetSpacing(), [4e-5, 4e-6, 4e-6], rtol=1e-6)  # file positions are mm
    np.testing.assert_allclose(img.GetOrigin(), [1e-3, 0, 0], rtol=1e-6)
    back = ar.read_volume(out)  # the recorded unit wins by default
    assert back.space == ar.Space("em", "nm")
    np.testing.assert_allclose(back.voxel_size, [40, 4, 4], rtol=1e-6)
    in_um = ar.read_volume(out, unit="um")
    np.testing.assert_allclose(in_um.voxel_size, [0.04, 0.004, 0.004], rtol=1e-6)
    np.testing.assert_allclose(in_um.origin, [1.0, 0, 0], rtol=1e-6)
    with pytest.raises(InputError, match="unit"):
        ar.read_volume(out, space=ar.Space("em", "nm"), unit="um")


def test_foreign_nifti_is_mm_to_um(crop, tmp_path):
    """A NIfTI atlasreg did not write: SimpleITK's numbers × 1000 in the default µm space."""
    img = sitk.GetImageFromArray(crop.transpose(2, 1, 0).copy())
    img.SetSpacing((0.05, 0.04, 0.04))
    img.SetOrigin((-5.0, 2.5, 0.125))
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(img, str(tmp_path / "foreign.nii.gz"))
    v = ar.read_volume(tmp_path / "foreign.nii.gz", orientation="psl", space="sample")
    assert v.space == ar.Space("sample", "um", "psl")
    np.testing.assert_array_equal(v.numpy(), crop)
    for i in ([0, 0, 0], [3, 7, 11]):
        np.testing.assert_allclose(v.index_to_physical([i])[0],
                                   np.array(img.TransformIndexToPhysicalPoint(i)) * 1000, atol=1e-3)


def test_given_voxel_size_must_match_file(brain, tmp_path):
    out = ar.write_volume(brain, tmp_path / "b.nrrd")
    assert ar.read_volume(out, voxel_size=VS).shape == brain.shape  # agreeing is fine
    with pytest.raises(InputError, match="contradicts") as e:
        ar.read_volume(out, voxel_size=(50, 40, 25))
    assert "override=True" in str(e.value) and str(out) in str(e.value)
    v = ar.read_volume(out, voxel_size=(50, 40, 25), override=True)
    np.testing.assert_allclose(v.voxel_size, (50, 40, 25))
    with pytest.raises(InputError, match="orientation"):
        ar.read_volume(out, orientation="asr")
    assert ar.read_volume(out, orientation="asr", override=True).orientation == "asr"


# -- TIFF slice folders ------------------------------------------------------------------------------------

def test_tiff_slice_folder(crop, tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for i, sl in enumerate(crop):  # unpadded numbers: z2 must come before z10
        tifffile.imwrite(folder / f"z{i + 1}.tif", sl)
    (folder / "notes.txt").write_text("ignored")
    v = ar.read_volume(folder, voxel_size=VS, orientation="psl")
    assert isinstance(v.data, da.Array)
    np.testing.assert_array_equal(v.numpy(), crop)
    np.testing.assert_array_equal(v.data[12].compute(), crop[12])
    with pytest.raises(InputError, match="voxel_size"):
        ar.read_volume(folder)
    tifffile.imwrite(folder / "z99.tif", crop[0, :10])
    with pytest.raises(InputError, match="z99.tif"):
        ar.read_volume(folder, voxel_size=VS)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no .tif"):
        ar.read_volume(empty, voxel_size=VS)


# -- HDF5 ------------------------------------------------------------------------------------------------

def test_hdf5_lazy_slicing_reads_only_needed_blocks(brain, tmp_path):
    out = ar.write_volume(brain, tmp_path / "b.h5", chunks=32)
    with dask.config.set({"array.chunk-size": "1MiB"}):
        v = ar.read_volume(out)
    assert isinstance(v.data, da.Array) and v.data.npartitions > 20
    with TaskCounter() as tc:
        part = v.data[100:110, 50:60, 200:210].compute()
    np.testing.assert_array_equal(part, brain.numpy()[100:110, 50:60, 200:210])
    assert tc.n < 10  # a handful of tasks, not one per block of the volume
    np.testing.assert_array_equal(v.numpy(), brain.numpy())


@pytest.mark.parametrize("suffix", [".h5", ".ome.zarr"])
def test_lazy_volume_pickles_for_distributed_workers(brain, tmp_path, suffix):
    """The dask graph reopens its file in the worker: it survives pickling (what dask.distributed does)."""
    import pickle

    v = ar.read_volume(ar.write_volume(brain, tmp_path / f"b{suffix}"))
    data = pickle.loads(pickle.dumps(v.data))
    np.testing.assert_array_equal(data[200:203, 10:20].compute(), brain.numpy()[200:203, 10:20])


def test_hdf5_plain_dataset_without_geometry(crop, tmp_path):
    p = tmp_path / "plain.hdf5"
    with h5py.File(p, "w") as f:
        f["raw/img"] = crop
        f["other"] = np.zeros(5)
    with pytest.raises(InputError, match="voxel_size"):
        ar.read_volume(p)
    v = ar.read_volume(p, voxel_size=VS)  # the only 3-D dataset
    np.testing.assert_array_equal(v.numpy(), crop)
    np.testing.assert_allclose(v.origin, 0)
    with pytest.raises(InputError, match="no dataset 'nope'"):
        ar.read_volume(p, dataset="nope", voxel_size=VS)
    with pytest.raises(InputError, match="level"):
        ar.read_volume(p, voxel_size=VS, level=1)
    with h5py.File(p, "a") as f:
        f["raw/img"].attrs["element_size_um"] = [50.0, 40.0, 40.0]
    np.testing.assert_allclose(ar.read_volume(p).voxel_size, VS)


def _write_bdv(path: Path, levels: list[np.ndarray], resolutions, xml_voxel=None):
    """A BigDataViewer HDF5 file as BDV writes it: uint16 values stored as int16."""
    with h5py.File(path, "w") as f:
        f["s00/resolutions"] = np.asarray(resolutions, np.float64)
        f["s00/subdivisions"] = np.full((len(levels), 3), 32, np.int32)
        for k, a in enumerate(levels):
            f.create_dataset(f"t00000/s00/{k}/cells", data=a.view(np.int16), chunks=(16, 16, 16))
    if xml_voxel is not None:
        path.with_suffix(".xml").write_text(
            '<?xml version="1.0" encoding="UTF-8"?><SpimData version="0.2"><SequenceDescription>'
            f'<ImageLoader format="bdv.hdf5"><hdf5 type="relative">{path.name}</hdf5></ImageLoader>'
            '<ViewSetups><ViewSetup><id>0</id><name>brain</name><size>1 1 1</size><voxelSize><unit>µm</unit>'
            f'<size>{xml_voxel}</size></voxelSize></ViewSetup></ViewSetups></SequenceDescription></SpimData>')


def test_bdv_multiscale_levels(brain, tmp_path):
    # Real data ×3 so values exceed 32767: BDV's int16 storage must come back as uint16.
    lvl0 = (brain.numpy().astype(np.uint32) * 3).astype(np.uint16)
    assert lvl0.max() > 32767
    # level 1 halves only array axes 1 and 2; BDV's resolutions are in x, y, z order (reversed)
    lvl1 = lvl0[:, :192, :270].reshape(270, 96, 2, 135, 2).mean((2, 4)).round().astype(np.uint16)
    p = tmp_path / "bdv.h5"
    _write_bdv(p, [lvl0, lvl1], [[1, 1, 1], [2, 2, 1]])
    with pytest.raises(InputError, match="voxel_size"):
        ar.read_volume(p)
    v0 = ar.read_volume(p, voxel_size=VS)
    assert v0.dtype == np.uint16 and isinstance(v0.data, da.Array)
    np.testing.assert_array_equal(v0.numpy(), lvl0)
    v1 = ar.read_volume(p, voxel_size=VS, level=1)
    np.testing.assert_array_equal(v1.numpy(), lvl1)
    np.testing.assert_allclose(v1.voxel_size, [50, 80, 80])
    np.testing.assert_allclose(v1.origin, [0, 20, 20])  # centre of the 2-voxel block it averages
    # the same tissue point sits at the same physical place in both levels
    np.testing.assert_allclose(v1.index_to_physical([[10, 3, 7]]), v0.index_to_physical([[10, 6.5, 14.5]]))
    with pytest.raises(InputError, match="level 2 does not exist"):
        ar.read_volume(p, voxel_size=VS, level=2)
    # with the companion XML (voxelSize in x, y, z) no voxel size is needed, and a wrong one is refused
    _write_bdv(p, [lvl0, lvl1], [[1, 1, 1], [2, 2, 1]], xml_voxel="40 40 50")
    vx = ar.read_volume(p, level=1, dataset="s00")
    np.testing.assert_allclose(vx.voxel_size, [50, 80, 80])
    with pytest.raises(InputError, match="contradicts"):
        ar.read_volume(p, voxel_size=(40, 40, 50))


# -- OME-Zarr ----------------------------------------------------------------------------------------------

def test_ome_zarr_pyramid_is_block_mean(brain, tmp_path):
    out = ar.write_volume(brain, tmp_path / "b.ome.zarr", chunks=64)
    g = zarr.open_group(str(out), mode="r")
    ms = g.attrs["multiscales"][0]
    assert ms["version"] == "0.4" and g.metadata.zarr_format == 2
    assert len(ms["datasets"]) == 4 and [a["unit"] for a in ms["axes"]] == ["micrometer"] * 3
    a = brain.numpy().astype(np.float64)
    mean2 = a[:270, :192, :270].reshape(135, 2, 96, 2, 135, 2).mean((1, 3, 5))
    v1 = ar.read_volume(out, level=1)
    np.testing.assert_array_equal(v1.numpy(), np.rint(mean2).astype(np.uint16))
    np.testing.assert_allclose(v1.voxel_size, [100, 80, 80])
    np.testing.assert_allclose(v1.origin, [25, 20, 20])
    v3 = ar.read_volume(out, level=3)
    assert v3.shape == (33, 24, 33)
    with pytest.raises(InputError, match="level 4 does not exist"):
        ar.read_volume(out, level=4)
    # a given level-0 voxel size is checked against level 0, whatever level is read
    assert ar.read_volume(out, level=2, voxel_size=VS).shape == (67, 48, 67)


def test_ome_zarr_v3_and_nearest_labels(crop, tmp_path):
    labels = (crop > np.median(crop)).astype(np.uint32) * 315 + 1
    vol = ar.Volume(labels, voxel_size=(4.0, 4.0, 40.0), space=ar.Space("em", "nm"))
    out = ar.write_volume(vol, tmp_path / "l.ome.zarr", ngff_version="0.5", downsample="nearest", levels=2,
                          chunks=16)
    g = zarr.open_group(str(out), mode="r")
    assert g.metadata.zarr_format == 3 and g.attrs["ome"]["version"] == "0.5"
    back = ar.read_volume(out, level=1)
    assert back.space == ar.Space("em", "nm")
    np.testing.assert_allclose(back.voxel_size, [8, 8, 40])  # the coarse axis is not halved
    np.testing.assert_array_equal(back.numpy(), labels[::2, ::2, :][:20, :15])
    assert set(np.unique(back.numpy())) <= {1, 316}
    in_um = ar.read_volume(out, unit="um")
    np.testing.assert_allclose(in_um.voxel_size, [0.004, 0.004, 0.04])


def test_level_factors_respect_anisotropy():
    f = level_factors((2000, 2000, 200), (4, 4, 40), None)
    assert [tuple(x) for x in f[:5]] == [(1, 1, 1), (2, 2, 1), (4, 4, 1), (8, 8, 1), (16, 16, 2)]
    assert max(np.asarray((2000, 2000, 200)) // f[-1]) <= 64


def test_ome_zarr_lazy_and_corrupt_chunk(brain, tmp_path):
    out = ar.write_volume(brain, tmp_path / "b.ome.zarr", chunks=64, levels=1)
    with dask.config.set({"array.chunk-size": "1MiB"}):
        v = ar.read_volume(out)
    assert isinstance(v.data, da.Array) and v.data.npartitions >= 20
    # damage one chunk far from the slice we read: the slice still works, the whole volume does not
    (out / "0" / "4" / "3" / "4").write_bytes(b"\x00garbage" * 10)
    with TaskCounter() as tc:
        part = v.data[:10, :10, :10].compute()
    np.testing.assert_array_equal(part, brain.numpy()[:10, :10, :10])
    assert tc.n < 10
    with pytest.raises(InputError, match="block") as e:
        v.numpy()
    assert str(out) in str(e.value)


def test_foreign_ome_zarr_with_channel_axis(crop, tmp_path):
    """An NGFF 0.4 image as other tools write it: c, z, y, x axes, nanometres, multiscale-wide scale."""
    p = tmp_path / "img.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=2)
    a = g.create_array("s0", shape=(1,) + crop.shape, chunks=(1, 16, 16, 16), dtype=crop.dtype,
                       chunk_key_encoding={"name": "v2", "separator": "/"})
    a[:] = crop[None]
    g.attrs["multiscales"] = [{
        "version": "0.4", "axes": [{"name": "c", "type": "channel"}] + [
            {"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 25000, 20000, 20000]},
            {"type": "translation", "translation": [0, 500, 0, -1000]}]}],
        "coordinateTransformations": [{"type": "scale", "scale": [1, 2, 2, 2]}]}]
    v = ar.read_volume(p)
    assert v.shape == crop.shape and v.unit == "nm"
    np.testing.assert_array_equal(v.numpy(), crop)
    np.testing.assert_allclose(v.voxel_size, [50000, 40000, 40000])
    np.testing.assert_allclose(v.origin, [1000, 0, -2000])
    vu = ar.read_volume(p, space="sample", unit="um")
    np.testing.assert_allclose(vu.voxel_size, VS)
    np.testing.assert_allclose(vu.index_to_physical([[10, 0, 5]]), [[501.0, 0.0, 198.0]])


def test_ome_zarr_bad_geometry(crop, tmp_path):
    out = ar.write_volume(ar.Volume(crop, VS), tmp_path / "b.ome.zarr", levels=1)
    g = zarr.open_group(str(out), mode="r+")
    ms = g.attrs["multiscales"]
    good = [dict(m) for m in ms]
    ms[0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [50.0, 40.0]
    g.attrs["multiscales"] = ms
    with pytest.raises(InputError, match="2 values but there are 3 axes"):
        ar.read_volume(out)
    ms[0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [50.0, 0.0, 40.0]
    g.attrs["multiscales"] = ms
    with pytest.raises(InputError, match="positive"):
        ar.read_volume(out)
    ms = good
    ms[0]["axes"] = ms[0]["axes"][:2]
    g.attrs["multiscales"] = ms
    with pytest.raises(InputError, match="space axes"):
        ar.read_volume(out)


def test_ome_zarr_unfinished_job_is_refused(crop, tmp_path):
    out = ar.write_volume(ar.Volume(crop, VS), tmp_path / "j.ome.zarr", levels=1)
    g = zarr.open_group(str(out), mode="r+")
    g.attrs["atlasreg"] = {**g.attrs["atlasreg"], "status": "incomplete"}
    with pytest.raises(InputError, match="did not finish"):
        ar.read_volume(out)
    g.attrs["atlasreg"] = {**g.attrs["atlasreg"], "status": "complete"}
    np.testing.assert_array_equal(ar.read_volume(out).numpy(), crop)


def test_ome_zarr_refuses_rotation(crop, tmp_path):
    rot = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    with pytest.raises(InputError, match="direction"):
        ar.write_volume(ar.Volume(crop, VS, direction=rot), tmp_path / "r.ome.zarr")
    assert _siblings(tmp_path) == []


# -- validation of content ----------------------------------------------------------------------------------

def test_nonfinite_values_are_counted(crop, tmp_path):
    f = crop.astype(np.float32)
    f[3, 4, 5] = np.nan
    f[0, 0, :2] = np.inf
    tifffile.imwrite(tmp_path / "f.tif", f)
    with pytest.raises(InputError, match=r"3 of 48000 values are NaN or infinite"):
        ar.read_volume(tmp_path / "f.tif", voxel_size=VS)
    v = ar.read_volume(tmp_path / "f.tif", voxel_size=VS, allow_nonfinite=True)
    assert np.isnan(v.numpy()[3, 4, 5])
    ar.write_volume(v, tmp_path / "f.h5")
    with pytest.raises(InputError, match="3 of 48000"):  # small lazy data: checked when opened
        ar.read_volume(tmp_path / "f.h5")
    for suffix in (".nii.gz", ".nrrd"):  # ITK's NIfTI reader turns NaN into 0: atlasreg must not
        ar.write_volume(v, tmp_path / f"f{suffix}")
        with pytest.raises(InputError, match="3 of 48000"):
            ar.read_volume(tmp_path / f"f{suffix}")
        back = ar.read_volume(tmp_path / f"f{suffix}", allow_nonfinite=True).numpy()
        np.testing.assert_array_equal(back, f)  # NaN == NaN here


def test_big_lazy_nonfinite_checked_per_block(tmp_path, monkeypatch):
    import atlasreg.io._checks as checks

    monkeypatch.setattr(checks, "EAGER_FINITE_CHECK_BYTES", 1000)
    a = np.ones((20, 20, 20), np.float32)
    a[15, 15, 15] = np.nan
    p = tmp_path / "big.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("volume", data=a, chunks=(10, 10, 10))
    with dask.config.set({"array.chunk-size": "4KiB"}):
        v = ar.read_volume(p, voxel_size=1)  # opening stays instant: nothing is read yet
    assert v.data.npartitions == 8
    assert v.data[:10].compute().sum() == 4000  # blocks without NaN read fine
    with pytest.raises(InputError, match=r"1 of 1000 values in block"):
        v.numpy()


def test_unsupported_content(crop, tmp_path):
    p = tmp_path / "c.h5"
    with h5py.File(p, "w") as f:
        f["volume"] = crop.astype(np.complex64)
    with pytest.raises(InputError, match="complex"):
        ar.read_volume(p, voxel_size=VS)
    img = sitk.GetImageFromArray(crop.astype(np.complex64))
    sitk.WriteImage(img, str(tmp_path / "c.nii"))
    with pytest.raises(InputError, match="complex"):
        ar.read_volume(tmp_path / "c.nii")
    tifffile.imwrite(tmp_path / "2d.tif", crop[0])
    with pytest.raises(InputError, match="3-D"):
        ar.read_volume(tmp_path / "2d.tif", voxel_size=VS)
    with h5py.File(tmp_path / "4d.h5", "w") as f:
        f["volume"] = np.zeros((2, 3, 4, 5), np.uint8)
    with pytest.raises(InputError, match="4 dimension"):
        ar.read_volume(tmp_path / "4d.h5", voxel_size=VS)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 3), np.uint8), isVector=True), str(tmp_path / "v.nrrd"))
    with pytest.raises(InputError, match="components"):
        ar.read_volume(tmp_path / "v.nrrd")


def test_self_contradicting_geometry(crop, tmp_path):
    p = tmp_path / "g.h5"
    ar.write_volume(ar.Volume(crop, VS, space="sample"), p)
    with h5py.File(p, "a") as f:
        f["volume"].attrs["direction"] = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1.0]])
    with pytest.raises(InputError, match="orthonormal"):
        ar.read_volume(p)
    with h5py.File(p, "a") as f:
        f["volume"].attrs["direction"] = np.eye(3)
        f["volume"].attrs["voxel_size"] = [50.0, 0.0, 40.0]
    with pytest.raises(InputError, match="voxel size"):
        ar.read_volume(p)


def test_missing_and_unknown(tmp_path):
    with pytest.raises(InputError, match="no such file") as e:
        ar.read_volume(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(e.value)
    (tmp_path / "x.mrc").write_bytes(b"1234")
    with pytest.raises(InputError, match="unknown volume format"):
        ar.read_volume(tmp_path / "x.mrc")
    with pytest.raises(InputError, match="unknown volume format"):
        ar.write_volume(ar.Volume(np.zeros((2, 2, 2)), 1), tmp_path / "x.png")
    with pytest.raises(InputError, match="Volume"):
        ar.write_volume(np.zeros((2, 2, 2)), tmp_path / "x.nii")


# -- writers: overwrite protection and atomicity ------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii.gz", ".tif", ".h5", ".ome.zarr"])
def test_no_overwrite_without_force(crop, tmp_path, suffix):
    vol = ar.Volume(crop, VS, space="sample")
    out = ar.write_volume(vol, tmp_path / f"o{suffix}")
    with pytest.raises(OutputExistsError, match="force"):
        ar.write_volume(vol, out)
    vol2 = vol.with_data(crop[::-1].copy())
    ar.write_volume(vol2, out, force=True)
    np.testing.assert_array_equal(ar.read_volume(out).numpy(), crop[::-1])
    assert _siblings(tmp_path) == [out.name]


def test_failed_write_leaves_nothing(crop, tmp_path):
    def boom(block):
        if block.sum() >= 0:
            raise RuntimeError("disk on fire")
        return block

    bad = ar.Volume(da.from_array(crop, chunks=10).map_blocks(boom, dtype=crop.dtype), VS)
    for suffix in (".ome.zarr", ".h5", ".tif"):
        with pytest.raises(RuntimeError, match="disk on fire"):
            ar.write_volume(bad, tmp_path / f"bad{suffix}")
    assert _siblings(tmp_path) == []
    # an existing good output survives a failed forced rewrite
    good = ar.write_volume(ar.Volume(crop, VS), tmp_path / "good.ome.zarr", levels=1)
    with pytest.raises(RuntimeError):
        ar.write_volume(bad, good, force=True)
    np.testing.assert_array_equal(ar.read_volume(good).numpy(), crop)
    assert _siblings(tmp_path) == ["good.ome.zarr"]


def test_pyramid_written_blockwise(brain, tmp_path):
    """Writing from dask never holds more than a few chunks: no task returns anything near the volume."""
    lazy = ar.Volume(da.from_array(brain.numpy(), chunks=(64, 64, 64)), VS, space="sample")
    with TaskCounter() as tc:
        out = ar.write_volume(lazy, tmp_path / "b.ome.zarr", chunks=64)
    assert tc.max_nbytes <= 8 * 128**3 * 4  # at most a 2x-chunk float block; the volume is 28 MB as uint16
    assert tc.max_nbytes < brain.numpy().nbytes / 4
    np.testing.assert_array_equal(ar.read_volume(out).numpy(), brain.numpy())


def test_atomic_path_contract(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        # inside a private folder made for this write, hidden, in the target's folder (no cross-device rename)
        assert tmp.parent.parent == target.parent and tmp.parent.name.startswith(".out.txt.tmp-")
        assert tmp.name == "out.txt" and not target.exists() and not tmp.exists()
        tmp.write_text("one")
    assert target.read_text() == "one"
    with pytest.raises(OutputExistsError):
        with atomic_path(target):
            pass
    with pytest.raises(ValueError):
        with atomic_path(target, force=True) as tmp:
            tmp.write_text("half")
            raise ValueError("interrupted")
    assert target.read_text() == "one" and _siblings(target.parent) == ["out.txt"]
    d = tmp_path / "store.zarr"
    for content in ("a", "b"):
        with atomic_path(d, force=True) as tmp:
            tmp.mkdir()
            (tmp / "f").write_text(content)
    assert (d / "f").read_text() == "b" and sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr", "sub"]


@pytest.mark.parametrize("code", ["asr", "psl", "ras", "lpi", "sar", "ial"])
def test_nifti_with_anatomical_direction_is_labelled_by_nibabel(tmp_path, code):
    """Issue 16, item 19: a NIfTI written from `with_anatomical_direction()` carries the direction its
    orientation code states; nibabel (not atlasreg) reports the matching axis codes; atlasreg reads it back."""
    import nibabel as nib

    from atlasreg.spaces import origin_to_nifti

    v = ar.Volume(np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6), (25.0, 20.0, 10.0), space="ccf",
                  orientation=code)
    plain = ar.write_volume(v, tmp_path / "plain.nii.gz")
    assert nib.aff2axcodes(nib.load(str(plain)).affine) == ("L", "P", "S")  # identity direction: misleading
    a = v.with_anatomical_direction()
    p = ar.write_volume(a, tmp_path / f"{code}.nii.gz")
    img = nib.load(str(p))
    assert "".join(nib.aff2axcodes(img.affine)) == origin_to_nifti(code)
    np.testing.assert_array_equal(np.asarray(img.dataobj), v.numpy())
    back = ar.read_volume(p)
    np.testing.assert_allclose(back.direction, a.direction, atol=1e-6)
    np.testing.assert_allclose(back.index_to_physical([[3, 4, 5]]), a.index_to_physical([[3, 4, 5]]), atol=1e-3)
