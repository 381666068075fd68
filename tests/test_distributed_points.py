"""Chunked, parallel point mapping and region annotation (atlasreg.distributed.points) on real neurons."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

import atlasreg as ar
from atlasreg.distributed import map_points, map_points_file
from atlasreg.errors import InputError, OutputExistsError

SWC = ["17302_00002_CP.swc", "17302_00024_PVT.swc", "18453_2428_x13810_y8197_MOs.swc"]


@pytest.fixture(scope="module")
def nodes(data_dir) -> pd.DataFrame:
    """Real fMOST neuron nodes (CCF 25 µm voxel units -> µm; x = AP, y = DV, z = LR), with their ids."""
    frames = []
    for k, name in enumerate(SWC):
        a = np.loadtxt(data_dir / "neurons" / "fmost_ccf25" / name, comments="#")
        frames.append(pd.DataFrame({"x": a[:, 2] * 25.0, "y": a[:, 3] * 25.0, "z": a[:, 4] * 25.0,
                                    "neuron": k, "node": a[:, 0].astype(np.int64),
                                    "type": a[:, 1].astype(np.int64)}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def atlas(data_dir):
    return ar.Atlas.load(data_dir / "atlas" / "allen_mouse_200um.npz",
                         ontology=data_dir / "atlas" / "allen_structure_tree.csv", voxel_size=200,
                         file_orientation="asr")


def sample_to_ccf(seed: int = 0) -> ar.Transform:
    """A mild affine + smooth displacement field from "sample" into the CCF (µm); some points leave the field."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    A = ar.Affine.from_rotation([2.0, -1.5, 3.0], src="sample", dst="mid", center=(6600, 4000, 5700))
    u = np.stack([gaussian_filter(rng.standard_normal((20, 14, 18)), 2) for _ in range(3)], -1)
    u *= 150.0 / np.abs(u).max()
    F = ar.DisplacementField(u, spacing=(500, 500, 500), origin=(-200, -200, -200), src="mid", dst="ccf")
    return ar.Sequence([A, F])


def test_chunked_mapping_equals_one_call_and_atlas_lookup(nodes, atlas):
    T = sample_to_ccf()
    pts = nodes[["x", "y", "z"]].to_numpy()
    expected = T.map_points(pts)
    unmapped = ~np.all(np.isfinite(expected), axis=1)
    assert 0 < unmapped.sum() < 0.5 * len(pts)  # the case of points leaving the field is exercised
    got, ids = map_points(pts, T, annotate=atlas, chunk_size=7_000, progress=False)
    np.testing.assert_array_equal(got, expected)
    want = np.full(len(pts), -1, np.int64)
    want[~unmapped] = atlas.region_of(expected[~unmapped])
    np.testing.assert_array_equal(ids, want)
    assert len(np.unique(ids[ids > 0])) > 10  # real structures
    # SpaceGraph + names, a plain callable, no annotation
    g = ar.SpaceGraph(T.steps)
    got2 = map_points(pts[:5000], g, src="sample", dst="ccf", chunk_size=999)
    np.testing.assert_array_equal(got2, expected[:5000])


class Lookup:
    """Region ids of the nearest voxel of a label volume (picklable, tokenizable, can be told to fail)."""

    def __init__(self, labels: np.ndarray, voxel_size: float, fail_on_call: int | None = None):
        self.labels, self.voxel_size, self.fail_on_call, self.calls = labels, voxel_size, fail_on_call, 0

    def __call__(self, pts):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("lookup crashed")
        idx = np.floor(pts / self.voxel_size + 0.5).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < np.asarray(self.labels.shape)), axis=1)
        out = np.full(len(pts), -1, np.int64)
        out[inside] = self.labels[tuple(idx[inside].T)]
        return out

    def __dask_tokenize__(self):
        return ("Lookup", self.labels.shape, self.voxel_size)


def _write(df: pd.DataFrame, path: Path):
    if path.suffix == ".parquet":
        df.to_parquet(path, row_group_size=20_000)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        g = zarr.open_group(str(path), mode="w")
        g.create_array("points", data=df[["x", "y", "z"]].to_numpy(), chunks=(20_000, 3))
        for c in df.columns:
            if c not in ("x", "y", "z"):
                g.create_array(c, data=df[c].to_numpy(), chunks=(20_000,))


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    g = zarr.open_group(str(path), mode="r")
    p = g["points"][:]
    out = {"x": p[:, 0], "y": p[:, 1], "z": p[:, 2]}
    out.update({k: g[k][:] for k in g.array_keys() if k != "points"})
    return pd.DataFrame(out)


@pytest.mark.parametrize("src_fmt", [".parquet", ".csv", ".zarr"])
def test_tables_in_and_out(src_fmt, nodes, data_dir, tmp_path):
    ann = np.load(data_dir / "atlas" / "allen_mouse_200um.npz")["annotation"]
    lookup = Lookup(ann, 200.0)
    T = sample_to_ccf()
    df = nodes.iloc[:60_000]
    src = tmp_path / f"in{src_fmt}"
    _write(df, src)
    expected = T.map_points(df[["x", "y", "z"]].to_numpy())
    ok = np.all(np.isfinite(expected), axis=1)
    want_ids = np.full(len(df), -1)
    want_ids[ok] = lookup(expected[ok])
    for dst_fmt in (".parquet", ".csv", ".zarr"):
        out = tmp_path / f"out{dst_fmt}"
        res = map_points_file(src, out, T, annotate=lookup, chunk_size=15_000, progress=False)
        assert res.path == out.absolute() and res.skipped == 0 and res.computed >= 3
        got = _read(out)
        assert len(got) == len(df)
        np.testing.assert_array_equal(got[["x", "y", "z"]].to_numpy(), expected)  # NaN where unmapped
        np.testing.assert_array_equal(got["region"].to_numpy(), want_ids)
        # the other columns come along, in the input's order
        np.testing.assert_array_equal(got["node"].to_numpy(), df["node"].to_numpy())
        np.testing.assert_array_equal(got["neuron"].to_numpy(), df["neuron"].to_numpy())
        assert not (tmp_path / (out.name + ".partial")).exists()
    # keep the input coordinates beside the mapped ones
    res = map_points_file(src, tmp_path / "both.parquet", T, out_columns=("ccf_x", "ccf_y", "ccf_z"),
                          chunk_size=15_000)
    both = pd.read_parquet(res.path)
    np.testing.assert_array_equal(both[["x", "y", "z"]].to_numpy(), df[["x", "y", "z"]].to_numpy())
    np.testing.assert_array_equal(both[["ccf_x", "ccf_y", "ccf_z"]].to_numpy(), expected)
    assert "region" not in both


def test_bad_tables_are_refused_before_work(nodes, tmp_path):
    T = sample_to_ccf()
    src = tmp_path / "in.parquet"
    nodes[nodes.neuron == 1].iloc[:1000].rename(columns={"x": "ap"}).to_parquet(src)  # inside the field
    with pytest.raises(InputError, match=r"\['x'\]"):
        map_points_file(src, tmp_path / "o.parquet", T)
    with pytest.raises(InputError, match="parquet"):
        map_points_file(src, tmp_path / "o.xlsx", T)
    with pytest.raises(InputError, match="not found"):
        map_points_file(tmp_path / "missing.csv", tmp_path / "o.csv", T)
    with pytest.raises(InputError, match="annotate"):
        map_points_file(src, tmp_path / "o.parquet", T, columns=("ap", "y", "z"), annotate=42)
    with pytest.raises(InputError, match="SpaceGraph"):
        map_points_file(src, tmp_path / "o.parquet", ar.SpaceGraph(T.steps), columns=("ap", "y", "z"))
    named = tmp_path / "named.parquet"
    nodes.iloc[:1000].assign(label="a").to_parquet(named)
    with pytest.raises(InputError, match="numbers only"):
        map_points_file(named, tmp_path / "o.zarr", T)
    (tmp_path / "exists.csv").write_text("x\n")
    with pytest.raises(OutputExistsError):
        map_points_file(src, tmp_path / "exists.csv", T, columns=("ap", "y", "z"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.csv", "in.parquet", "named.parquet"]
    # A lookup that breaks its contract fails the job (found in the first chunk, not silently written).
    with pytest.raises(InputError, match="one region id per point"):
        map_points_file(src, tmp_path / "o.parquet", T, columns=("ap", "y", "z"), annotate=lambda p: [1, 2])
    assert not (tmp_path / "o.parquet").exists()


def test_interrupted_point_job_resumes(nodes, data_dir, tmp_path, capsys):
    ann = np.load(data_dir / "atlas" / "allen_mouse_200um.npz")["annotation"]
    T = sample_to_ccf()
    src = tmp_path / "in.parquet"
    nodes.to_parquet(src, row_group_size=10_000)
    n_parts = -(-len(nodes) // 10_000)
    out = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError, match="crashed"):
        map_points_file(src, out, T, annotate=Lookup(ann, 200.0, fail_on_call=4), scheduler="sync")
    assert not out.exists()
    assert len(os.listdir(tmp_path / "out.parquet.partial" / "done")) == 3
    res = map_points_file(src, out, T, annotate=Lookup(ann, 200.0), progress=True)
    assert res.skipped == 3 and res.computed == n_parts - 3 and res.rows == len(nodes)
    err = capsys.readouterr().err
    assert f"{n_parts - 3}/{n_parts - 3}" in err  # the progress bar counted the chunks
    got = pd.read_parquet(out)
    expected = T.map_points(nodes[["x", "y", "z"]].to_numpy())
    np.testing.assert_array_equal(got[["x", "y", "z"]].to_numpy(), expected)
    np.testing.assert_array_equal(got["node"].to_numpy(), nodes["node"].to_numpy())
