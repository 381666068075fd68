"""One OME-Zarr writer, one downsampler, one axis convention (issue 13 item 7).

``write_volume``, the EM pyramid and the blockwise warp all write OME-Zarr; a volume and a transform in the
same space must name the same axis the same way (names listed in array-axis order, as
``transforms.ngff`` lists a coordinate system's axes). ngff-zarr, not atlasreg, reads the volumes back.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

import atlasreg as ar

import ngff_zarr  # noqa: E402  (in the test extra: the second reader never skips)

EM = ar.Space("em", "nm")


def _systems(doc, name):
    """Every NGFF coordinate system called ``name`` anywhere in a JSON document."""
    if isinstance(doc, dict):
        if doc.get("name") == name and isinstance(doc.get("axes"), list):
            yield doc
        for v in doc.values():
            yield from _systems(v, name)
    elif isinstance(doc, list):
        for v in doc:
            yield from _systems(v, name)


def _volume(shape=(6, 8, 10)):
    a = np.random.default_rng(3).integers(0, 4000, shape).astype(np.uint16)
    return ar.Volume(a, (40.0, 8.0, 4.0), origin=(100.0, 200.0, 300.0), space=EM)


def test_volume_and_transform_in_one_space_agree_axis_by_axis(tmp_path):
    vol = _volume()
    out = ar.write_volume(vol, tmp_path / "em.ome.zarr", levels=1)
    # an anisotropic map, so that any axis permutation between the two files shows
    A = np.array([[1.0, 0, 0, 5.0], [0, 2.0, 0, -7.0], [0, 0, 3.0, 11.0], [0, 0, 0, 1]])
    T = ar.Affine(A, src=EM, dst=ar.Space("lm", "nm"))
    tfile = ar.save_transform(T, tmp_path / "em_to_lm.json")
    cs = list(_systems(json.loads(Path(tfile).read_text()), "em"))
    assert cs, "the transform file names no 'em' coordinate system"
    t_names = [a["name"] for a in cs[0]["axes"] if a.get("type", "space") == "space"]

    ms = ngff_zarr.from_ngff_zarr(str(out))  # another library's reading of our volume
    img = ms.images[0]
    assert list(img.dims) == t_names == list(ar.spaces.AXIS_NAMES)
    idx = np.array([[1, 2, 3], [5, 7, 9], [0, 0, 0]])
    # voxel positions as ngff-zarr understands them, by axis name ...
    by_name = {n: img.scale[n] * idx[:, img.dims.index(n)] + img.translation[n] for n in img.dims}
    # ... handed to the transform in ITS axis order: the same points atlasreg maps
    pts = np.stack([by_name[n] for n in t_names], axis=1)
    np.testing.assert_allclose(T.map_points(pts), T.map_points(vol.index_to_physical(idx)))
    assert all(img.axes_units[n] == "nanometer" for n in img.dims)
    np.testing.assert_array_equal(np.asarray(img.data), vol.numpy())


def test_all_three_writers_share_layout_and_downsampler(tmp_path):
    from atlasreg.distributed import warp_blockwise
    from atlasreg.em.pyramid import build_pyramid

    a = np.random.default_rng(5).integers(0, 60000, (17, 20, 23)).astype(np.uint16)  # odd axes
    vol = ar.Volume(a, (2.0, 2.0, 2.0), origin=(1.0, 2.0, 3.0), space=EM)
    p1 = ar.write_volume(vol, tmp_path / "io.ome.zarr", levels=3, chunks=8)
    p2 = build_pyramid(vol, tmp_path / "em.ome.zarr", levels=3, chunks=(8, 8, 8)).path
    # the identity warp onto the volume's own grid: level 0 is the volume; its pyramid comes from the warp's writer
    p3 = warp_blockwise(vol, None, vol.grid, tmp_path / "warp.ome.zarr", dtype="uint16", chunks=8, levels=3,
                        scheduler="sync", progress=False).path
    metas = []
    for p in (p1, p2, p3):
        g = zarr.open_group(str(p), mode="r")
        ms = g.attrs["multiscales"][0]
        metas.append((ms["axes"], ms["datasets"]))
        img = ngff_zarr.from_ngff_zarr(str(p))
        assert [tuple(im.dims) for im in img.images] == [ar.spaces.AXIS_NAMES] * 3
    assert metas[0] == metas[1] == metas[2]
    levels = [[np.asarray(zarr.open_array(f"{p}/{k}", mode="r")[:]) for k in range(3)] for p in (p1, p2, p3)]
    for k in range(3):
        want = a if k == 0 else None
        if k:
            f = 2 ** k
            n = [s // f for s in a.shape]
            blocks = a[:n[0] * f, :n[1] * f, :n[2] * f].astype(np.float64)
            want = np.rint(blocks.reshape(n[0], f, n[1], f, n[2], f).mean(axis=(1, 3, 5))).astype(np.uint16)
        for got in (lv[k] for lv in levels):
            # level k is exactly n // 2**k voxels per axis; 2x2x2 means of means of uint16 differ from the
            # direct 2**k block mean only by the rounding of the level between
            assert got.shape == want.shape
            assert np.abs(got.astype(int) - want.astype(int)).max() <= (0 if k < 2 else 1)
        assert np.array_equal(levels[0][k], levels[1][k]) and np.array_equal(levels[0][k], levels[2][k])
    # every level's voxel 0 sits at the centre of the block it averages, as written
    for k in range(3):
        v = ar.read_volume(p3, level=k)
        np.testing.assert_allclose(v.origin, np.array([1.0, 2.0, 3.0]) + (2 ** k - 1) / 2 * 2.0)


def test_downsample_block_is_the_exact_block_mean():
    from atlasreg.io.ome_zarr import downsample_block

    a = np.random.default_rng(0).integers(-2**31, 2**31 - 1, (5, 6, 7), dtype=np.int64).astype(np.int32)
    got = downsample_block(a, (2, 3, 1))
    want = np.rint(a[:4, :6, :].astype(np.float64).reshape(2, 2, 2, 3, 7, 1).mean(axis=(1, 3, 5))).astype(np.int32)
    np.testing.assert_array_equal(got, want)  # int32 means in float64: no precision lost above 2**24
    lab = np.zeros((4, 4, 4), bool)
    lab[1, 1, 1] = True
    assert not downsample_block(lab, (2, 2, 2)).any()  # labels: the first voxel of each block, never a mean
