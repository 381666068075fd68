"""Blockwise warping (atlasreg.distributed): same voxels as the in-memory warp, bounded memory, safe faults."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

import atlasreg as ar
from atlasreg.distributed import is_complete, warp_blockwise
from atlasreg.distributed.engine import transform_token
from atlasreg.errors import InputError, OutputExistsError, SpaceMismatchError
from atlasreg.transforms.base import Transform

REPO = Path(__file__).resolve().parents[1]


def smooth_field(shape, amplitude, seed):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    u = np.stack([gaussian_filter(rng.standard_normal(shape), 2.0) for _ in range(3)], axis=-1)
    return u * (amplitude / np.abs(u).max())


@pytest.fixture(scope="module")
def brain(data_dir):
    """The real light-sheet brain, every third voxel (90 x 65 x 91), as a chunked dask volume."""
    arr = tifffile.imread(data_dir / "lightsheet" / "brain_psl_50x40x40um.tif")[::3, ::3, ::3]
    arr = np.ascontiguousarray(arr)
    return ar.Volume(da.from_array(arr, chunks=(32, 32, 32)), voxel_size=(150, 120, 120), space="sample",
                     orientation="psl")


@pytest.fixture(scope="module")
def labels(data_dir):
    """Real CCF structure ids (200 µm atlas annotation, uint32)."""
    ann = np.load(data_dir / "atlas" / "allen_mouse_200um.npz")["annotation"]
    return ar.Volume(da.from_array(ann, chunks=(24, 24, 24)), voxel_size=200.0, space="ccf", orientation="asr")


def _transforms(vol: ar.Volume, kind: str, target: str):
    """Transforms between ``vol.space`` and ``target``, given in both directions across the cases."""
    ext = np.asarray(vol.shape) * vol.voxel_size
    centre = ext / 2
    A = ar.Affine.from_rotation([6.0, -4.0, 9.0], src=vol.space.name, dst=target, center=centre)
    A = ar.Affine(A.matrix @ np.diag([1.04, 0.97, 1.02, 1.0]) + np.c_[np.zeros((4, 3)), [31.7, -12.3, 20.9, 0]],
                  vol.space.name, target)
    if kind == "affine":
        return A  # moving -> target: the pull-back is its exact inverse
    nodes = (12, 10, 12)
    sp = ext * 1.2 / (np.asarray(nodes) - 1)
    u = smooth_field(nodes, 2.5 * vol.voxel_size.max(), seed=3)
    if kind == "field":  # given target -> moving: used as the pull-back directly
        return ar.DisplacementField(u, spacing=sp, origin=-0.1 * ext, src=target, dst=vol.space.name)
    # 2-step chain moving -> mid -> target, as a SpaceGraph: pull-back = affine inverse then field inverse
    F = ar.DisplacementField(u, spacing=sp, origin=-0.1 * ext, src=vol.space.name, dst="mid")
    B = ar.Affine(A.matrix, "mid", target)
    return ar.SpaceGraph([F, B])


def _grid(vol: ar.Volume, target: str) -> ar.Grid:
    ext = np.asarray(vol.shape) * vol.voxel_size
    shape = (48, 40, 44)
    return ar.Grid(shape, tuple(ext / np.asarray(shape) * 1.05), ar.Space(target), origin=(-90.0, 35.0, -60.0))


def _in_memory(vol, T, grid, interpolation, dtype=None):
    mem = ar.Volume(vol.numpy(), vol.voxel_size, vol.origin, vol.direction, vol.space)
    if isinstance(T, ar.SpaceGraph):
        return T.warp(mem, grid.space.name, grid, interpolation=interpolation, dtype=dtype).data
    return ar.warp(mem, T, grid, interpolation=interpolation, dtype=dtype).data


@pytest.mark.parametrize("kind", ["affine", "field", "chain"])
def test_blockwise_warp_matches_in_memory_warp(kind, brain, labels, tmp_path):
    # Labels with nearest neighbour: exactly the same ids. Intensities with linear: same to float rounding.
    for vol, interpolation in ((labels, "nearest"), (brain, "linear")):
        T = _transforms(vol, kind, "target")
        grid = _grid(vol, "target")
        expected = _in_memory(vol, T, grid, interpolation)
        out = tmp_path / f"{vol.space.name}_{kind}.ome.zarr"
        res = warp_blockwise(vol, T, grid, out, interpolation=interpolation, chunks=16, progress=False)
        got = res.volume
        assert res.path == out.absolute() and is_complete(out)
        assert got.shape == grid.shape and got.dtype == expected.dtype
        np.testing.assert_allclose(got.voxel_size, grid.spacing)
        np.testing.assert_allclose(got.origin, grid.origin)
        assert got.space.name == "target"
        g = got.numpy()
        if interpolation == "nearest":
            np.testing.assert_array_equal(g, expected)
            assert len(np.unique(g)) > 20  # real structures came through, not just background
        else:
            np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-3)
            assert np.count_nonzero(g) > 0.3 * g.size
        assert not (tmp_path / (out.name + ".partial")).exists()


def test_integer_output_and_pyramid(brain, tmp_path):
    T = _transforms(brain, "affine", "target")
    grid = _grid(brain, "target")
    expected = _in_memory(brain, T, grid, "linear", dtype="uint16")
    res = warp_blockwise(brain, T, grid, tmp_path / "b.ome.zarr", dtype="uint16", chunks=8, levels=4)
    np.testing.assert_array_equal(res.volume.numpy(), expected)  # same rounding and clipping
    g = zarr.open_group(str(res.path), mode="r")
    ms = g.attrs["multiscales"][0]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2", "3"]
    assert g.attrs["atlasreg"]["status"] == "complete"
    # Every level is the 2x2x2 mean of the one before (levels 1-2 written inside the tasks, 3 after), n // 2
    # voxels per axis (an odd last voxel is left out, as in every atlasreg OME-Zarr pyramid)
    prev = expected
    for lvl in range(1, 4):
        cur = res.level(lvl)
        x, y, z = (s // 2 for s in prev.shape)
        p = prev[:2 * x, :2 * y, :2 * z].astype(np.float64)
        want = np.rint(p.reshape(x, 2, y, 2, z, 2).mean(axis=(1, 3, 5))).astype(np.uint16)
        np.testing.assert_array_equal(cur.numpy(), want)
        # The level's voxel centres sit at the centres of the blocks they average.
        np.testing.assert_allclose(cur.index_to_physical([[0, 0, 0]])[0],
                                   np.asarray(grid.origin) + (2 ** lvl - 1) / 2 * np.asarray(grid.spacing))
        prev = want


def test_bad_input_is_refused_before_any_work(brain, tmp_path):
    grid = _grid(brain, "target")
    T = _transforms(brain, "affine", "target")
    with pytest.raises(InputError, match="ome.zarr"):
        warp_blockwise(brain, T, grid, tmp_path / "out.nii.gz")
    with pytest.raises(SpaceMismatchError):
        warp_blockwise(brain, ar.Affine.identity("elsewhere", "other"), grid, tmp_path / "o.ome.zarr")
    rotated = ar.Grid(grid.shape, grid.spacing, grid.space, direction=ar.Affine.from_rotation(
        [0, 0, 30]).matrix[:3, :3])
    with pytest.raises(InputError, match="rotated"):
        warp_blockwise(brain, T, rotated, tmp_path / "o.ome.zarr")
    with pytest.raises(InputError, match="even"):
        warp_blockwise(brain, T, grid, tmp_path / "o.ome.zarr", chunks=15)
    with pytest.raises(InputError, match="interpolation"):
        warp_blockwise(brain, T, grid, tmp_path / "o.ome.zarr", interpolation="cubic")
    with pytest.raises(InputError, match="fill"):
        warp_blockwise(brain, T, grid, tmp_path / "o.ome.zarr", dtype="uint8", fill=-1)
    assert list(tmp_path.iterdir()) == []  # nothing written
    (tmp_path / "o.ome.zarr").mkdir()
    with pytest.raises(OutputExistsError):
        warp_blockwise(brain, T, grid, tmp_path / "o.ome.zarr")


class Flaky(Transform):
    """A pull-back that fails after ``fail_after`` calls, like a worker dying mid-warp."""

    def __init__(self, inner, fail_after=None):
        super().__init__(inner.src, inner.dst)
        self.inner, self.fail_after, self.calls = inner, fail_after, 0

    def _map(self, pts):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("worker died")
        return self.inner.map_points(pts)

    def _inverse(self):
        return self.inner.inverse()

    def token(self):  # the same job whether or not it will fail
        return transform_token(self.inner)


def test_failure_leaves_nothing_complete_and_rerun_resumes(brain, tmp_path):
    grid = _grid(brain, "target")
    pull = _transforms(brain, "affine", "target").inverse()
    expected = _in_memory(brain, pull, grid, "linear")
    out = tmp_path / "w.ome.zarr"
    with pytest.raises(RuntimeError, match="worker died"):
        warp_blockwise(brain, Flaky(pull, fail_after=5), grid, out, chunks=8, levels=1, scheduler="sync")
    assert not out.exists()
    partial = tmp_path / "w.ome.zarr.partial"
    assert partial.is_dir() and not is_complete(partial / out.name)
    assert len(os.listdir(partial / "done")) == 5
    res = warp_blockwise(brain, Flaky(pull), grid, out, chunks=8, levels=1)
    assert res.resumed and res.skipped == 5 and res.computed + res.skipped == 6 * 5 * 6
    np.testing.assert_allclose(res.volume.numpy(), expected, rtol=1e-6, atol=1e-3)
    assert not partial.exists()
    # A different job on the same output starts afresh instead of mixing blocks.
    with pytest.raises(RuntimeError):
        warp_blockwise(brain, Flaky(pull, fail_after=3), grid, tmp_path / "x.ome.zarr", chunks=8, levels=1,
                       scheduler="sync")
    res2 = warp_blockwise(brain, pull, grid, tmp_path / "x.ome.zarr", chunks=8, levels=1, interpolation="nearest")
    assert not res2.resumed and res2.skipped == 0


_KILL_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, tifffile, atlasreg as ar
    from atlasreg.distributed import warp_blockwise
    arr = np.ascontiguousarray(tifffile.imread(sys.argv[1])[::3, ::3, ::3])
    vol = ar.Volume(arr, voxel_size=(150, 120, 120), space="sample")
    T = ar.Affine.from_rotation([5, -3, 8], src="target", dst="sample", center=(6750, 3900, 5460))
    grid = ar.Grid((48, 40, 44), (140, 100, 130), ar.Space("target"))
    warp_blockwise(vol, T, grid, sys.argv[2], chunks=6, levels=1, scheduler="sync", progress=False)
    """)


def test_killed_process_leaves_no_complete_output_and_rerun_completes(data_dir, tmp_path):
    tif = data_dir / "lightsheet" / "brain_psl_50x40x40um.tif"
    out = tmp_path / "k.ome.zarr"
    done = tmp_path / "k.ome.zarr.partial" / "done"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(tif), str(out)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        t0 = time.time()
        while time.time() - t0 < 60:
            if done.is_dir() and len(os.listdir(done)) >= 20:
                break
            if proc.poll() is not None:
                pytest.fail("the warp finished before it could be killed; make it bigger")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    n_done = len(os.listdir(done))
    assert 20 <= n_done < 8 * 7 * 8
    assert not out.exists() and not is_complete(done.parent / out.name)
    arr = np.ascontiguousarray(tifffile.imread(tif)[::3, ::3, ::3])
    vol = ar.Volume(arr, voxel_size=(150, 120, 120), space="sample")
    T = ar.Affine.from_rotation([5, -3, 8], src="target", dst="sample", center=(6750, 3900, 5460))
    grid = ar.Grid((48, 40, 44), (140, 100, 130), ar.Space("target"))
    res = warp_blockwise(vol, T, grid, out, chunks=6, levels=1, progress=False)
    assert res.resumed and res.skipped >= n_done and res.computed + res.skipped == 8 * 7 * 8
    np.testing.assert_allclose(res.volume.numpy(), ar.warp(vol, T, grid).data, rtol=1e-6, atol=1e-3)
    assert is_complete(out)


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np, dask.array as da, atlasreg as ar
    from atlasreg.distributed import warp_blockwise

    def peak_mb():
        # VmHWM: this process's peak resident memory (ru_maxrss would include the parent's before exec)
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024

    def planes(block_info=None):
        # A lazily generated volume: nothing of it exists until a block asks for it.
        loc = block_info[None]["array-location"]
        i = np.arange(*loc[0], dtype=np.uint32)
        return np.broadcast_to(((i * 37) % 4001).astype(np.uint16)[:, None, None],
                               tuple(b - a for a, b in loc))

    src = da.map_blocks(planes, chunks=((128,) * 8, (128,) * 8, (128,) * 4), dtype=np.uint16)
    vol = ar.Volume(src, voxel_size=1.0, space="big")
    T = ar.Affine.from_rotation([2, -3, 4], src="out", dst="big", center=(512, 512, 256))
    grid = ar.Grid((256, 256, 128), (4, 4, 4), ar.Space("out"))
    base = peak_mb()
    res = warp_blockwise(vol, T, grid, sys.argv[1], chunks=32, dtype="uint16", progress=False)
    out = res.volume.data[100:140, 100:140, 60:70].compute()
    print(json.dumps({"peak_mb": peak_mb(), "base_mb": base,
                      "source_mb": src.nbytes / 2**20, "levels": res.levels, "mean": float(out.mean())}))
    """)


def test_memory_is_bounded_by_blocks_not_volume(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / "big.ome.zarr")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rep["source_mb"] == 1024
    # A 1 GiB source warped with a few hundred MB at most on top of the interpreter.
    assert rep["peak_mb"] - rep["base_mb"] < 350, rep
    assert rep["peak_mb"] < 0.5 * rep["source_mb"], rep
    assert 500 < rep["mean"] < 3500  # real values were written (the planes pattern averages ~2000)


def test_hdf5_source_and_scheduler_choice(brain, tmp_path):
    import pickle

    import h5py

    from atlasreg.distributed._source import Source

    arr = brain.numpy()
    with h5py.File(tmp_path / "brain.h5", "w") as fh:
        fh.create_dataset("volume", data=arr, chunks=(16, 16, 16))
    with h5py.File(tmp_path / "brain.h5", "r") as fh:
        ds = fh["volume"]
        src = pickle.loads(pickle.dumps(Source(ds)))  # travels as (file, dataset) and reopens
        np.testing.assert_array_equal(src.read((3, 4, 5), (20, 9, 30)), arr[3:20, 4:9, 5:30])
        vol = ar.Volume(ds, voxel_size=brain.voxel_size, space="sample")
        T = _transforms(brain, "affine", "target")
        grid = _grid(brain, "target")
        res = warp_blockwise(vol, T, grid, tmp_path / "h5.ome.zarr", chunks=16, scheduler="sync")
        np.testing.assert_allclose(res.volume.numpy(), _in_memory(brain, T, grid, "linear"), rtol=1e-6, atol=1e-3)
    with pytest.raises(InputError, match="scheduler"):
        warp_blockwise(brain, T, grid, tmp_path / "x.ome.zarr", scheduler="nonsense")
    assert not (tmp_path / "x.ome.zarr").exists()
