"""EM pyramids: exact block means on the real ISBI stack, NGFF geometry, HDF5 input, bad input, bounded memory."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

import atlasreg as ar
from atlasreg.em import build_pyramid, open_pyramid, pyramid_factors
from atlasreg.errors import InputError

EM = ar.Space("em", "nm")


@pytest.fixture(scope="module")
def isbi(data_dir):
    return tifffile.imread(data_dir / "em" / "isbi2012_train_volume_30x512x512.tif")


def _block_mean(a: np.ndarray, step) -> np.ndarray:
    s = [n // k for n, k in zip(a.shape, step)]
    a = a[: s[0] * step[0], : s[1] * step[1], : s[2] * step[2]].astype(np.float64)
    return a.reshape(s[0], step[0], s[1], step[1], s[2], step[2]).mean(axis=(1, 3, 5))


def test_levels_are_exact_block_means_of_real_em(isbi, tmp_path):
    em = ar.Volume(isbi, (50, 4, 4), origin=(100.0, 8.0, -4.0), space=EM)
    p = build_pyramid(em, tmp_path / "isbi.ome.zarr", target_voxel_size=0.1, target_unit="um")
    # in-plane halvings first (4 -> 8 -> 16 -> 32 nm), then all axes (50 -> 100 nm, 32 -> 64)
    assert [lv.voxel_size for lv in p.levels] == [(50.0, 4.0, 4.0), (50.0, 8.0, 8.0), (50.0, 16.0, 16.0),
                                                  (50.0, 32.0, 32.0), (100.0, 64.0, 64.0), (200.0, 128.0, 128.0)]
    assert p.reached_target
    prev = isbi
    for k in range(1, len(p.levels)):
        lv = p.level(k)
        step = np.asarray(p.levels[k].factor) // np.asarray(p.levels[k - 1].factor)
        want = np.rint(_block_mean(prev, step)).astype(np.uint8)  # each level from the rounded level before
        got = lv.numpy()
        assert got.dtype == np.uint8 and got.shape == p.levels[k].shape
        np.testing.assert_array_equal(got, want)
        # voxel centres stay physically right: level k's voxel 0 sits at the centre of the level-0 block it averages
        f = np.asarray(p.levels[k].factor)
        centre = em.index_to_physical(((f - 1) / 2.0)[None])[0]
        np.testing.assert_allclose(lv.index_to_physical([[0, 0, 0]])[0], centre, atol=1e-9)
        np.testing.assert_allclose(lv.voxel_size, em.voxel_size * f)
        assert lv.space == EM
        prev = got
    # the NGFF metadata says the same (what other viewers read)
    meta = json.loads((tmp_path / "isbi.ome.zarr" / ".zattrs").read_text())["multiscales"][0]
    ds = meta["datasets"][3]["coordinateTransformations"]
    assert ds[0] == {"type": "scale", "scale": [50.0, 32.0, 32.0]}
    assert ds[1]["translation"] == pytest.approx([100.0, 8.0 + 14.0, -4.0 + 14.0])
    assert {a["unit"] for a in meta["axes"]} == {"nanometer"}
    assert p.level_for(0.03, unit="um") == 3 and p.level_for(0.06, unit="um") == 4 and p.level_for(0.07, unit="um") == 5
    assert open_pyramid(tmp_path / "isbi.ome.zarr").levels == p.levels


def test_float_levels_match_direct_block_means(tmp_path):
    a = np.random.default_rng(3).random((12, 96, 80)).astype(np.float32)
    p = build_pyramid(ar.Volume(a, (40, 5, 5), space=EM), tmp_path / "f.ome.zarr", levels=4, chunks=(8, 32, 32))
    for k, lv in enumerate(p.levels):
        np.testing.assert_allclose(p.level(k).numpy(), _block_mean(a, lv.factor), rtol=0, atol=2e-6)


def test_hdf5_input_gives_the_same_pyramid(isbi, tmp_path):
    import h5py

    with h5py.File(tmp_path / "em.h5", "w") as f:
        f.create_dataset("raw", data=isbi[:8], chunks=(4, 128, 128))
    p = build_pyramid(tmp_path / "em.h5", tmp_path / "h.ome.zarr", dataset="raw", voxel_size=(50, 4, 4), unit="nm",
                      space="em", target_voxel_size=30)
    q = build_pyramid(ar.Volume(isbi[:8], (50, 4, 4), space=EM), tmp_path / "v.ome.zarr", target_voxel_size=30)
    assert p.levels == q.levels and len(p.levels) == 4
    np.testing.assert_array_equal(p.level(3).numpy(), q.level(3).numpy())
    assert p.space == EM


def test_bad_input_is_named(isbi, tmp_path):
    src = tmp_path / "em.h5"
    import h5py

    with h5py.File(src, "w") as f:
        f.create_dataset("raw", data=isbi[:2])
    with pytest.raises(InputError, match="unknown unit.*furlong") as e:
        build_pyramid(src, tmp_path / "o.ome.zarr", voxel_size=(50, 4, 4), unit="furlong", target_voxel_size=1)
    assert str(src) in str(e.value)
    with pytest.raises(InputError, match="not coarser than the source") as e:
        build_pyramid(src, tmp_path / "o.ome.zarr", voxel_size=(50, 4, 4), unit="nm", target_voxel_size=2)
    assert str(src) in str(e.value)
    with pytest.raises(InputError, match="target_unit"):
        build_pyramid(src, tmp_path / "o.ome.zarr", voxel_size=(50, 4, 4), unit="nm", target_voxel_size=2,
                      target_unit="parsec")
    with pytest.raises(InputError, match="OME-Zarr"):
        build_pyramid(src, tmp_path / "o.nii.gz", voxel_size=(50, 4, 4), unit="nm", target_voxel_size=100)
    with pytest.raises(InputError, match="voxel size"):
        build_pyramid(src, tmp_path / "o.ome.zarr", unit="nm", target_voxel_size=100)
    with pytest.raises(InputError, match="not both"):
        build_pyramid(src, tmp_path / "o.ome.zarr", voxel_size=(50, 4, 4), target_voxel_size=100, levels=2)
    assert not (tmp_path / "o.ome.zarr").exists()
    # a target the volume is too small to reach: warned, coarsest level kept
    with pytest.warns(UserWarning, match="too small to reach"):
        p = build_pyramid(src, tmp_path / "o.ome.zarr", voxel_size=(50, 4, 4), unit="nm", target_voxel_size=1e5)
    assert not p.reached_target and p.levels[-1].shape[1] == 1


def test_factors_follow_the_isotropy_rule():
    # an H01-like block: 4x4x33 nm, 1 mm^3 -> 5 um
    f = pyramid_factors((30000, 250000, 250000), (33, 4, 4), target_voxel_size=5000)
    vs = [tuple((np.array([33, 4, 4]) * x).tolist()) for x in f]
    assert vs[:5] == [(33, 4, 4), (33, 8, 8), (33, 16, 16), (33, 32, 32), (66, 64, 64)]
    assert min(vs[-1]) >= 5000 and min(vs[-2]) < 5000
    # a thin stack (200 sections) cannot reach 5 um in z: the in-plane axes still get there, then it stops
    f = pyramid_factors((200, 40000, 40000), (33, 4, 4), target_voxel_size=5000)
    last = np.array([200, 40000, 40000]) // f[-1]
    assert last[0] == 1 and min(4 * f[-1][1:]) >= 5000 and min(4 * f[-2][1:]) < 5000


_WORKER = textwrap.dedent("""
    import json, resource, shutil, sys
    import numpy as np, dask.array as da
    import atlasreg as ar
    from atlasreg.em import build_pyramid
    src, out, warm = sys.argv[1], sys.argv[2], sys.argv[3]
    # warm up imports, zarr codecs and thread pools on a tiny volume: what remains is the interpreter baseline
    build_pyramid(ar.Volume(da.zeros((8, 64, 64), np.uint8, chunks=32), (40, 4, 4), space=ar.Space("em", "nm")),
                  warm, target_voxel_size=16)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    p = build_pyramid(src, out, voxel_size=(40, 4, 4), unit="nm", space="em", target_voxel_size=500)
    print(json.dumps({"baseline": base, "levels": [lv.shape for lv in p.levels]}))
""")

_LAUNCHER = textwrap.dedent("""
    import json, resource, subprocess, sys
    r = subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    doc["peak"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps(doc))
""")


def test_pyramid_of_a_volume_larger_than_the_budget_has_bounded_memory(tmp_path):
    """~300 MB of EM-like uint8 written lazily to zarr; the pyramid child's peak RSS stays below
    the interpreter baseline + 40 % of the volume (the volume itself never fits in that budget)."""
    import dask.array as da
    import zarr

    shape, chunks = (72, 2048, 2048), (16, 256, 256)

    def block(block_info=None):
        (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        z, y, x = np.ogrid[z0:z1, y0:y1, x0:x1]
        rng = np.random.default_rng(z0 * 1_000_003 + y0 * 1009 + x0)
        v = 128 + 60 * np.sin(x * 0.05 + y * 0.031) * np.cos(z * 0.2 + y * 0.017)
        return np.clip(v + rng.integers(-20, 21, v.shape), 0, 255).astype(np.uint8)

    src = tmp_path / "big.zarr"
    arr = zarr.open_array(str(src), mode="w", shape=shape, chunks=chunks, dtype=np.uint8, zarr_format=2)
    da.store(da.map_blocks(block, chunks=da.core.normalize_chunks(chunks, shape), dtype=np.uint8), arr, lock=False)
    nbytes = int(np.prod(shape))
    r = subprocess.run([sys.executable, "-c", _LAUNCHER, _WORKER, str(src), str(tmp_path / "out.ome.zarr"),
                        str(tmp_path / "warm.ome.zarr")], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    extra = doc["peak"] - doc["baseline"]
    print(f"volume {nbytes / 2**20:.0f} MiB, baseline {doc['baseline'] / 2**20:.0f} MiB, peak {doc['peak'] / 2**20:.0f} MiB")
    assert doc["peak"] < doc["baseline"] + 0.4 * nbytes, (doc, nbytes)
    assert extra < 0.4 * nbytes
    facs = pyramid_factors(shape, (40, 4, 4), target_voxel_size=500)
    assert doc["levels"] == [list(np.asarray(shape) // f) for f in facs]
    assert facs[6].tolist() == [8, 64, 64]
    # spot-check: the coarsest level is the block mean of the data (within the per-level rounding)
    out = ar.read_volume(tmp_path / "out.ome.zarr", level=6)
    full = ar.read_volume(tmp_path / "out.ome.zarr", level=0).data[:8, :512, :512].compute()
    want = _block_mean(full, (8, 64, 64))[0, :8, :8]
    assert np.abs(out.numpy()[0, :8, :8].astype(float) - want).max() <= 3


def test_start_level_skips_the_full_resolution_copy(isbi, tmp_path):
    em = ar.Volume(isbi, (50, 4, 4), origin=(100.0, 8.0, -4.0), space=EM)
    full = build_pyramid(em, tmp_path / "full.ome.zarr", target_voxel_size=100)
    part = build_pyramid(em, tmp_path / "part.ome.zarr", target_voxel_size=100, start_level=2)
    assert part.levels == [dataclasses.replace(lv, path=str(k)) for k, lv in enumerate(full.levels[2:])]
    first = part.level(0)
    assert first.shape == (30, 128, 128) and np.allclose(first.voxel_size, (50, 16, 16))
    np.testing.assert_allclose(first.origin, full.level(2).origin)
    # level 2 straight from the source: the rounded mean of each 1x4x4 block
    np.testing.assert_array_equal(first.numpy(), np.rint(_block_mean(isbi, (1, 4, 4))).astype(np.uint8))
    # later levels are halvings of it, as in a full pyramid (within the extra rounding step of the full one)
    assert np.abs(part.level(2).numpy().astype(int) - full.level(4).numpy().astype(int)).max() <= 1
    with pytest.raises(InputError, match="start_level"):
        build_pyramid(em, tmp_path / "bad.ome.zarr", target_voxel_size=100, start_level=9)
