"""Neuroglancer precomputed volumes: fixtures written by cloud-volume, read by atlasreg (tensorstore); atlasreg's
writes read back by cloud-volume; the CLI verbs that take an EM volume accept precomputed."""
from __future__ import annotations

import json
import os

import cloudvolume  # the test extra installs cloud-volume and tensorstore
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

import atlasreg as ar
from atlasreg.cli import app
from atlasreg.errors import InputError
from atlasreg.io.volumes import volume_format

RES = [4, 4, 50]          # ISBI 2012 EM: 4 x 4 nm in plane, 50 nm sections
OFFSET = [100, 60, 3]     # voxel_offset (x, y, z) of scale 0


def _cv_write(path, arr, layer_type, encoding, chunk=(32, 32, 4), scales=1):
    """Write ``arr`` (x, y, z) with cloud-volume; further scales are 2x2x1 means (images) computed here."""
    info = cloudvolume.CloudVolume.create_new_info(
        num_channels=1, layer_type=layer_type, data_type=str(arr.dtype), encoding=encoding, resolution=RES,
        voxel_offset=OFFSET, chunk_size=list(chunk), volume_size=list(arr.shape))
    cv = cloudvolume.CloudVolume("file://" + str(path), info=info, compress=False, progress=False)
    for _ in range(scales - 1):
        cv.add_scale((2, 2, 1), chunk_size=list(chunk))
    cv.commit_info()
    cv[:, :, :] = arr[..., None]
    levels = [arr]
    for k in range(1, scales):
        a = levels[-1].astype(np.float64)
        nx, ny = a.shape[0] // 2, a.shape[1] // 2
        a = a[:2 * nx, :2 * ny].reshape(nx, 2, ny, 2, -1).mean(axis=(1, 3)).astype(arr.dtype)
        cvk = cloudvolume.CloudVolume("file://" + str(path), mip=k, compress=False, progress=False)
        cvk[:, :, :] = a[..., None]
        levels.append(a)
    return levels


@pytest.fixture(scope="module")
def isbi(data_dir):
    a = tifffile.imread(data_dir / "em" / "isbi2012_train_volume_30x512x512.tif")[:8, :128, :160]
    lab = tifffile.imread(data_dir / "em" / "isbi2012_train_labels_30x512x512.tif")[:8, :128, :160]
    return np.ascontiguousarray(a.transpose(2, 1, 0)), np.ascontiguousarray(lab.transpose(2, 1, 0))


@pytest.fixture(scope="module")
def em_pre(isbi, tmp_path_factory):
    p = tmp_path_factory.mktemp("pre") / "em"
    levels = _cv_write(p, isbi[0], "image", "raw", scales=2)
    return p, levels


def test_read_every_scale_with_its_geometry(em_pre):
    p, levels = em_pre
    v0 = ar.read_volume("precomputed://file://" + str(p))
    assert type(v0.data).__name__ == "Array"          # lazy (dask), not loaded
    assert v0.unit == "nm" and v0.shape == levels[0].shape
    np.testing.assert_array_equal(v0.voxel_size, RES)
    # voxel i covers [(offset + i) * res, (offset + i + 1) * res): its centre is atlasreg's voxel position
    np.testing.assert_allclose(v0.origin, (np.array(OFFSET) + 0.5) * RES)
    np.testing.assert_array_equal(v0.numpy(), levels[0])
    np.testing.assert_array_equal(v0.data[10:50, 3:70, 2:5].compute(), levels[0][10:50, 3:70, 2:5])
    v1 = ar.read_volume("precomputed://file://" + str(p), level=1)
    np.testing.assert_array_equal(v1.voxel_size, [8, 8, 50])
    np.testing.assert_array_equal(v1.numpy(), levels[1])
    # one frame for all scales: a scale-1 voxel sits at the mean of the 2x2 scale-0 voxel centres it averages
    c1 = v1.index_to_physical([[0, 0, 0], [5, 7, 2]])
    c0 = v0.index_to_physical([[0, 0, 0], [10, 14, 2]]) + np.array([2.0, 2.0, 0])
    np.testing.assert_allclose(c1, c0)
    with pytest.raises(InputError, match="level=2 does not exist.*2 scale"):
        ar.read_volume(p, level=2)


def test_plain_folder_is_recognised_not_called_a_tiff_folder(em_pre):
    p, levels = em_pre
    assert volume_format(p) == "precomputed"
    v = ar.read_volume(p, space="em")
    assert v.space == ar.Space("em", "nm")
    np.testing.assert_array_equal(v.numpy(), levels[0])
    # the URL after pathlib collapsed its '//' (as a CLI Path argument would) still names the same data
    from pathlib import Path

    assert ar.read_volume(Path("precomputed://file://" + str(p))).shape == levels[0].shape
    with pytest.raises(InputError, match="contradicts"):
        ar.read_volume(p, voxel_size=(4, 4, 40))


def test_compressed_segmentation_written_by_cloudvolume(isbi, tmp_path):
    lab = (isbi[1] > 0).astype(np.uint32) * 7 + np.arange(isbi[1].shape[2], dtype=np.uint32)[None, None, :]
    _cv_write(tmp_path / "seg", lab, "segmentation", "compressed_segmentation")
    v = ar.read_volume(tmp_path / "seg")
    assert v.dtype == np.uint32
    np.testing.assert_array_equal(v.numpy(), lab)


def test_write_is_read_by_cloudvolume_exactly(isbi, tmp_path):
    em = ar.Volume(isbi[0], RES, origin=(np.array(OFFSET) + 0.5) * RES, space=ar.Space("em", "nm"))
    out = ar.write_volume(em, tmp_path / "em.precomputed", chunks=(64, 64, 4))
    cv = cloudvolume.CloudVolume("file://" + str(out), progress=False)
    assert list(cv.bounds.minpt) == OFFSET and list(cv.resolution) == RES
    np.testing.assert_array_equal(np.asarray(cv[:, :, :])[..., 0], isbi[0])
    assert len(cv.info["scales"]) > 1   # a pyramid: x, y halved (z already coarse)
    assert cv.info["scales"][1]["resolution"] == [8, 8, 50]
    back = ar.read_volume(out)
    assert back.space == em.space
    np.testing.assert_allclose(back.origin, em.origin)
    # a light-sheet volume in CCF (um, origin 0 at a voxel centre): corners are not on the grid, so the
    # file's integer offset is the corner below and atlasreg reads the exact origin back
    lm = ar.Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), 25.0, origin=(0, 0, 0),
                   space=ar.Space("ccf", "um"), orientation="asr")
    o2 = ar.write_volume(lm, tmp_path / "lm.precomputed")
    info = json.loads((o2 / "info").read_text())
    assert info["scales"][0]["voxel_offset"] == [-1, -1, -1] and info["scales"][0]["resolution"] == [25000] * 3
    b2 = ar.read_volume(o2)
    assert b2.space == ar.Space("ccf", "um", "asr")
    np.testing.assert_allclose(b2.origin, 0, atol=1e-9)
    np.testing.assert_array_equal(b2.numpy(), lm.numpy())
    with pytest.raises(InputError, match="float64"):
        ar.write_volume(lm.with_data(lm.numpy().astype(np.float64)), tmp_path / "f64.precomputed")
    with pytest.raises(ar.errors.OutputExistsError):
        ar.write_volume(lm, tmp_path / "lm.precomputed")


def test_segmentation_with_region_names(isbi, tmp_path):
    from atlasreg.io.precomputed import write_precomputed

    lab = isbi[1].astype(np.uint32) // 255 + 1
    vol = ar.Volume(lab, RES, origin=(np.array(OFFSET) + 0.5) * RES, space=ar.Space("em", "nm"))
    out = write_precomputed(vol, tmp_path / "seg", labels={1: "membrane", 2: "cell"}, levels=2)
    cv = cloudvolume.CloudVolume("file://" + str(out), progress=False)
    assert cv.info["type"] == "segmentation" and cv.info["scales"][0]["encoding"] == "compressed_segmentation"
    np.testing.assert_array_equal(np.asarray(cv[:, :, :])[..., 0], lab)
    props = json.loads((out / cv.info["segment_properties"] / "info").read_text())
    assert props["@type"] == "neuroglancer_segment_properties"
    assert dict(zip(props["inline"]["ids"], props["inline"]["properties"][0]["values"])) == \
        {"1": "membrane", "2": "cell"}
    assert props["inline"]["properties"][0]["type"] == "label"
    # scale 1 is the most frequent label of each 2x2 block, as tensorstore downsamples segmentations
    s1 = np.asarray(cloudvolume.CloudVolume("file://" + str(out), mip=1, progress=False)[:, :, :])[..., 0]
    assert set(np.unique(s1)) <= {1, 2} and s1.shape[:2] == (80, 64)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_untrusted_info_files(em_pre, tmp_path):
    p, _ = em_pre
    d = _copy(p, tmp_path / "bad")
    info = json.loads((d / "info").read_text())

    def put(i):
        (d / "info").write_text(json.dumps(i))

    put({**info, "scales": [{**info["scales"][0], "key": "../../etc"}]})
    with pytest.raises(InputError, match="outside the dataset"):
        ar.read_volume("precomputed://file://" + str(d))
    put({**info, "num_channels": 2})
    with pytest.raises(InputError, match="2 channels"):
        ar.read_volume("precomputed://file://" + str(d))
    put({**info, "scales": [{**info["scales"][0], "chunk_sizes": [[1, 1, 1]], "size": [2**40, 2**20, 1]}]})
    with pytest.raises(InputError, match="chunks; at most"):
        ar.read_volume("precomputed://file://" + str(d))
    (d / "info").write_bytes(b"{" + b" " * (5 * 2**20) + b"}")
    with pytest.raises(InputError, match="bytes"):
        ar.read_volume("precomputed://file://" + str(d))
    # the same through tensorstore's key-value store (the gs:// / https:// path): at most the bound is fetched
    from atlasreg.io.precomputed import PrecomputedSource, read_precomputed_info

    with pytest.raises(InputError, match="more than 4194304 bytes"):
        read_precomputed_info(PrecomputedSource(d.absolute().as_uri() + "/", None))
    (d / "info").write_text("not json")
    with pytest.raises(InputError, match="not valid JSON"):
        ar.read_volume("precomputed://file://" + str(d))
    # a scale folder that is a link to data outside the dataset is not followed
    put(info)
    outside = _copy(p / info["scales"][0]["key"], tmp_path / "elsewhere")
    import shutil

    shutil.rmtree(d / info["scales"][0]["key"])
    os.symlink(outside, d / info["scales"][0]["key"])
    with pytest.raises(InputError, match="links outside"):
        ar.read_volume("precomputed://file://" + str(d))
    # a damaged chunk: the error names the dataset when the block is read, not a tensorstore traceback
    (d / info["scales"][0]["key"]).unlink()
    _copy(p / info["scales"][0]["key"], d / info["scales"][0]["key"])
    chunk = sorted((d / info["scales"][0]["key"]).iterdir())[0]
    chunk.write_bytes(chunk.read_bytes()[:-10])
    v = ar.read_volume(d)
    with pytest.raises(InputError, match=r"could not read block .* of it"):
        v.numpy()
    (tmp_path / "x.precomputed").write_bytes(b"random")
    with pytest.raises(InputError, match="not one"):
        ar.read_volume(tmp_path / "x.precomputed")
    (tmp_path / "y.precomputed").mkdir()
    with pytest.raises(InputError, match="not one"):
        ar.read_volume(tmp_path / "y.precomputed")
    with pytest.raises(InputError, match="no such precomputed folder"):
        ar.read_volume("precomputed://file://" + str(tmp_path / "nothing"))


def test_missing_tensorstore_says_how_to_install(em_pre, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorstore", None)   # as if it were not installed
    with pytest.raises(InputError, match=r"needs the package 'tensorstore'.*atlasreg\[precomputed\]"):
        ar.read_volume(em_pre[0])


# -- the CLI verbs ------------------------------------------------------------------------------------------

def test_em_pyramid_from_precomputed_url(em_pre, tmp_path):
    p, levels = em_pre
    out = tmp_path / "pyr.ome.zarr"
    r = CliRunner().invoke(app, ["em", "pyramid", "precomputed://file://" + str(p), "-o", str(out), "--levels", "2",
                                 "--chunks", "4,32,32"])
    assert r.exit_code == 0, r.output
    lv0 = ar.read_volume(out, level=0)
    assert lv0.unit == "nm"
    np.testing.assert_array_equal(lv0.numpy(), levels[0])
    np.testing.assert_allclose(lv0.origin, (np.array(OFFSET) + 0.5) * RES)


def test_em_crop_takes_a_precomputed_block(em_pre, tmp_path):
    p, _ = em_pre
    lm = ar.Volume(np.random.default_rng(0).integers(0, 1000, (40, 30, 12)).astype(np.uint16), (0.05, 0.05, 0.1),
                   space=ar.Space("lm", "um"))
    ar.write_volume(lm, tmp_path / "lm.nii.gz")
    T = ar.Affine.from_units(ar.Space("em", "nm"), ar.Space("lm", "um"))
    ar.save_transform(T, tmp_path / "em_to_lm.json")
    out = tmp_path / "crop.nii.gz"
    r = CliRunner().invoke(app, ["em", "crop", "precomputed://file://" + str(p), str(tmp_path / "lm.nii.gz"), "-t",
                                 str(tmp_path / "em_to_lm.json"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    c = ar.read_volume(out, space="lm")
    em = ar.read_volume(p, space="em")
    lo, hi = em.index_to_physical([[0, 0, 0], np.array(em.shape) - 1]) / 1000
    # the crop's voxels cover the EM block's voxel centres (placed from the precomputed offset), and reach no
    # more than two light-sheet voxels beyond
    half = c.voxel_size / 2
    assert np.all(c.origin - half <= lo + 1e-6) and np.all(c.origin - half > lo - 2 * c.voxel_size)
    end = c.origin + (np.array(c.shape) - 1) * c.voxel_size
    assert np.all(end + half >= hi - 1e-6) and np.all(end + half < hi + 2 * c.voxel_size)
    i0 = np.rint(lm.physical_to_index(c.origin[None])[0]).astype(int)
    np.testing.assert_array_equal(c.numpy(), lm.numpy()[i0[0]:i0[0] + c.shape[0], i0[1]:i0[1] + c.shape[1],
                                                          i0[2]:i0[2] + c.shape[2]])


def test_warp_big_takes_precomputed(em_pre, tmp_path):
    p, _ = em_pre
    em = ar.read_volume(p, space="em")
    ref = ar.Volume(np.zeros((40, 30, 8), np.uint8), (16, 16, 50), origin=em.origin, space=ar.Space("em2", "nm"))
    ar.write_volume(ref, tmp_path / "ref.nii.gz")
    A = ar.Affine.from_translation([30.0, -20.0, 0.0], src=ar.Space("em", "nm"), dst=ar.Space("em2", "nm"))
    ar.save_transform(A, tmp_path / "t.json")
    r = CliRunner().invoke(app, ["warp-big", "precomputed://file://" + str(p), str(tmp_path / "ref.nii.gz"),
                                 "-t", str(tmp_path / "t.json"), "-o", str(tmp_path / "out.ome.zarr"),
                                 "--moving-space", "em", "--reference-space", "em2", "--chunks", "16",
                                 "--interpolation", "nearest"])
    assert r.exit_code == 0, r.output
    got = ar.read_volume(tmp_path / "out.ome.zarr", space="em2").numpy()
    want = ar.warp(em, A, ar.read_volume(tmp_path / "ref.nii.gz", space="em2").grid,
                   interpolation="nearest").numpy()
    np.testing.assert_array_equal(got, want)
    assert got.any()


def test_remote_locations_are_tensorstore_urls():
    """gs:// and https:// datasets (H01's manifest points at precomputed://gs://h01-release/...): the URL atlasreg
    hands tensorstore parses as a key-value store (no network here)."""
    from pathlib import Path

    import tensorstore as ts

    from atlasreg.io.precomputed import precomputed_source

    cases = [("precomputed://gs://h01-release/data/20210601/4nm_raw", "gs://h01-release/data/20210601/4nm_raw/"),
             ("precomputed://https://storage.googleapis.com/h01-release/data/20210601/4nm_raw/",
              "https://storage.googleapis.com/h01-release/data/20210601/4nm_raw/"),
             (Path("precomputed://gs://h01-release/data/20210601/4nm_raw"), "gs://h01-release/data/20210601/4nm_raw/")]
    for given, url in cases:
        src = precomputed_source(given)
        assert src.url == url and src.local is None
        assert ts.KvStore.Spec(src.url).to_json()["driver"] in ("gcs", "http")
    with pytest.raises(InputError, match="unsupported precomputed location ftp"):
        ar.read_volume("precomputed://ftp://host/x")
    with pytest.raises(InputError, match="local folder"):
        ar.write_volume(ar.Volume(np.zeros((2, 2, 2), np.uint8), 1.0, space=ar.Space("em", "nm")),
                        "precomputed://gs://bucket/out")


def test_write_from_dask_blocks_that_straddle_chunks(isbi, tmp_path):
    """Dask blocks of the source (here 5 x 7 x 3) that do not line up with the precomputed chunks (16 x 16 x 4):
    every voxel lands, read back by cloud-volume."""
    import dask.array as da

    a = isbi[0]
    vol = ar.Volume(da.from_array(a, chunks=(5, 7, 3)), RES, space=ar.Space("em", "nm"))
    out = ar.write_volume(vol, tmp_path / "em.precomputed", chunks=(16, 16, 4), levels=1)
    np.testing.assert_array_equal(
        np.asarray(cloudvolume.CloudVolume("file://" + str(out), progress=False)[:, :, :])[..., 0], a)
