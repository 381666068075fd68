"""The same jobs on a dask.distributed cluster (two worker processes on loopback) give the local results."""
from __future__ import annotations

import os
import sys

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import tifffile

import atlasreg as ar
from atlasreg.distributed import map_points, map_points_file, warp_blockwise
from atlasreg.transforms.base import Transform

# Workers cannot import this test module: send its classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, silence_logs=40)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def brain_zarr(data_dir, tmp_path_factory):
    """The real light-sheet brain (every second voxel) written as OME-Zarr and opened lazily."""
    arr = tifffile.imread(data_dir / "lightsheet" / "brain_psl_50x40x40um.tif")[::2, ::2, ::2]
    path = tmp_path_factory.mktemp("cluster") / "brain.ome.zarr"
    ar.write_volume(ar.Volume(np.ascontiguousarray(arr), voxel_size=(100, 80, 80), space="sample",
                              orientation="psl"), path, chunks=(32, 32, 32))
    return ar.read_volume(path)


def chain():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(4)
    u = np.stack([gaussian_filter(rng.standard_normal((16, 12, 16)), 2) for _ in range(3)], -1)
    F = ar.DisplacementField(u * 120 / np.abs(u).max(), spacing=(900, 700, 700), origin=(-300, -200, -200),
                             src="sample", dst="mid")
    A = ar.Affine.from_rotation([5, -3, 7], src="mid", dst="target", center=(6750, 3860, 5420))
    return ar.SpaceGraph([F, A])


class DiesOnce(Transform):
    """A pull-back whose first use kills the worker process running it (as an OOM kill would)."""

    def __init__(self, inner, marker):
        super().__init__(inner.src, inner.dst)
        self.inner, self.marker = inner, str(marker)

    def _map(self, pts):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return self.inner.map_points(pts)

    def _inverse(self):
        return self.inner.inverse()


def test_warp_on_cluster_equals_local_run_even_when_a_worker_dies(client, brain_zarr, tmp_path):
    g = chain()
    grid = ar.Grid((64, 48, 60), (210, 170, 190), ar.Space("target"), origin=(-100, 50, 0))
    local = warp_blockwise(brain_zarr, g, grid, tmp_path / "local.ome.zarr", chunks=16, progress=False)
    remote = warp_blockwise(brain_zarr, g, grid, tmp_path / "remote.ome.zarr", chunks=16, scheduler=client,
                            progress=False)
    assert remote.levels == local.levels == 3
    for lvl in range(local.levels):
        np.testing.assert_array_equal(remote.level(lvl).numpy(), local.level(lvl).numpy())
    # A worker process dies in the middle: dask reruns its task elsewhere, the output is still exact.
    dying = DiesOnce(g.transform("target", "sample"), tmp_path / "died")
    res = warp_blockwise(brain_zarr, dying, grid, tmp_path / "dying.ome.zarr", chunks=16, scheduler=client)
    assert (tmp_path / "died").exists()
    np.testing.assert_array_equal(res.volume.numpy(), local.volume.numpy())


class DiesAfter(Transform):
    """A pull-back that kills its worker once ``n`` blocks are done (once per ``marker``); same job token."""

    def __init__(self, inner, done_dir, n, marker):
        super().__init__(inner.src, inner.dst)
        self.inner, self.done_dir, self.n, self.marker = inner, str(done_dir), n, str(marker)

    def _map(self, pts):
        if not os.path.exists(self.marker) and len(os.listdir(self.done_dir)) >= self.n:
            open(self.marker, "w").close()
            os._exit(1)
        return self.inner.map_points(pts)

    def _inverse(self):
        return self.inner.inverse()

    def token(self):
        from atlasreg.distributed.engine import transform_token

        return transform_token(self.inner)


def test_worker_death_that_fails_the_job_leaves_nothing_complete_and_rerun_resumes(client, brain_zarr, tmp_path):
    from distributed.scheduler import KilledWorker

    from atlasreg.distributed import is_complete

    g = chain()
    pull = g.transform("target", "sample")
    grid = ar.Grid((64, 48, 60), (210, 170, 190), ar.Space("target"), origin=(-100, 50, 0))
    out = tmp_path / "w.ome.zarr"
    partial = tmp_path / "w.ome.zarr.partial"

    def set_allowed(dask_scheduler, n):
        old = dask_scheduler.allowed_failures
        dask_scheduler.allowed_failures = n
        return old

    # 8 super-blocks at level 0; no retries: the first worker death fails the job, as when every retry dies.
    dying = DiesAfter(pull, partial / "done", 3, tmp_path / "died")
    old = client.run_on_scheduler(set_allowed, n=0)
    try:
        with pytest.raises(KilledWorker):
            warp_blockwise(brain_zarr, dying, grid, out, chunks=16, scheduler=client, progress=False)
    finally:
        client.run_on_scheduler(set_allowed, n=old)
    assert (tmp_path / "died").exists()
    assert not out.exists()
    n_done = len(os.listdir(partial / "done"))
    assert n_done >= 3 and not is_complete(partial / out.name)
    client.wait_for_workers(2, timeout=60)
    # The same command again (its worker-killer has fired): resumes from the finished blocks.
    res = warp_blockwise(brain_zarr, dying, grid, out, chunks=16, scheduler=client, progress=False)
    assert res.resumed and res.skipped >= 3 and is_complete(out) and not partial.exists()
    ref = warp_blockwise(brain_zarr, pull, grid, tmp_path / "ref.ome.zarr", chunks=16, progress=False)
    assert res.computed + res.skipped == ref.computed
    for lvl in range(ref.levels):
        np.testing.assert_array_equal(res.level(lvl).numpy(), ref.level(lvl).numpy())


class Lookup:
    """Nearest-voxel region ids from a label array (picklable for workers)."""

    def __init__(self, labels, voxel_size):
        self.labels, self.voxel_size = labels, voxel_size

    def __call__(self, pts):
        idx = np.floor(pts / self.voxel_size + 0.5).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < np.asarray(self.labels.shape)), axis=1)
        out = np.full(len(pts), -1, np.int64)
        out[inside] = self.labels[tuple(idx[inside].T)]
        return out


def test_points_on_cluster_equal_local_run(client, data_dir, tmp_path):
    a = np.loadtxt(data_dir / "neurons" / "fmost_ccf25" / "17302_00024_PVT.swc", comments="#")
    df = pd.DataFrame({"x": a[:, 2] * 25, "y": a[:, 3] * 25, "z": a[:, 4] * 25, "node": a[:, 0].astype(int)})
    df.to_parquet(tmp_path / "cells.parquet", row_group_size=4000)
    ann = np.load(data_dir / "atlas" / "allen_mouse_200um.npz")["annotation"]
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    u = np.stack([gaussian_filter(rng.standard_normal((30, 20, 26)), 2) for _ in range(3)], -1) * 300
    T = ar.Sequence([ar.Affine.from_translation([40, -25, 10], src="sample", dst="mid"),
                     ar.DisplacementField(u, spacing=(500, 500, 500), src="mid", dst="ccf")])
    lookup = Lookup(ann, 200.0)
    local = map_points_file(tmp_path / "cells.parquet", tmp_path / "local.parquet", T, annotate=lookup)
    # the address form opens (and closes) its own client
    remote = map_points_file(tmp_path / "cells.parquet", tmp_path / "remote.csv", T, annotate=lookup,
                             scheduler=client.scheduler.address)
    assert remote.computed == local.computed > 2
    pd.testing.assert_frame_equal(pd.read_csv(remote.path), pd.read_parquet(local.path), check_exact=True)
    pts = df[["x", "y", "z"]].to_numpy()
    m, ids = map_points(pts, T, annotate=lookup, chunk_size=3000, scheduler=client)
    np.testing.assert_array_equal(m, T.map_points(pts))
    np.testing.assert_array_equal(ids, pd.read_parquet(local.path)["region"].to_numpy())
