"""``atlasreg warp-big``, ``points-big``, ``field invert`` / ``field compose`` from the command line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import tifffile
from typer.testing import CliRunner

import atlasreg as ar
from atlasreg.cli import app

runner = CliRunner()


def test_big_verbs_match_the_library(data_dir, tmp_path):
    arr = np.ascontiguousarray(tifffile.imread(data_dir / "lightsheet" / "brain_psl_50x40x40um.tif")[::4, ::4, ::4])
    moving = ar.Volume(arr, voxel_size=(200, 160, 160), space="sample", orientation="psl")
    ar.write_volume(moving, tmp_path / "moving.ome.zarr", chunks=(16, 16, 16))
    ar.write_volume(ar.Volume(np.zeros((40, 30, 36), np.uint8), voxel_size=250, space="ccf"), tmp_path / "ref.nii.gz")
    A = ar.Affine.from_rotation([4, -3, 5], src="sample", dst="ccf", center=(6750, 3900, 5460))
    ar.save_transform(A, tmp_path / "sample_to_ccf.json")

    r = runner.invoke(app, ["warp-big", str(tmp_path / "moving.ome.zarr"), str(tmp_path / "ref.nii.gz"),
                            "-t", str(tmp_path / "sample_to_ccf.json"), "-o", str(tmp_path / "out.ome.zarr"),
                            "--chunks", "8", "--interpolation", "nearest"])
    assert r.exit_code == 0, r.output
    got = ar.read_volume(tmp_path / "out.ome.zarr")
    ref = ar.read_volume(tmp_path / "ref.nii.gz")
    want = ar.warp(moving, A, ref.grid, interpolation="nearest").data
    np.testing.assert_array_equal(got.numpy(), want)
    # the same output again: refused with the documented exit code, nothing touched
    r = runner.invoke(app, ["warp-big", str(tmp_path / "moving.ome.zarr"), str(tmp_path / "ref.nii.gz"),
                            "-t", str(tmp_path / "sample_to_ccf.json"), "-o", str(tmp_path / "out.ome.zarr")])
    assert r.exit_code == 4

    pts = np.random.default_rng(0).uniform([0, 0, 0], [13000, 7700, 10800], (5000, 3))
    pd.DataFrame({"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2]}).to_parquet(tmp_path / "cells.parquet")
    r = runner.invoke(app, ["points-big", str(tmp_path / "cells.parquet"), "-t", str(tmp_path / "sample_to_ccf.json"),
                            "--src", "sample", "--dst", "ccf", "-o", str(tmp_path / "cells_ccf.csv"),
                            "--chunk-size", "1000"])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(pd.read_csv(tmp_path / "cells_ccf.csv")[["x", "y", "z"]].to_numpy(),
                               A.map_points(pts), rtol=1e-12)
    r = runner.invoke(app, ["points-big", str(tmp_path / "cells.parquet"), "-t", str(tmp_path / "sample_to_ccf.json"),
                            "--src", "sample", "--dst", "ccf", "-o", str(tmp_path / "cells.xlsx")])
    assert r.exit_code == 2 and "parquet" in r.output

    u = np.random.default_rng(1).normal(0, 30, (9, 8, 7, 3))
    u[..., 0] += 600  # the nodes x = 0 of the inverse have their preimage off the grid: no inverse there
    F = ar.DisplacementField(u, spacing=(1000, 1000, 1000), src="ccf", dst="ccf2")
    ar.save_transform(F, tmp_path / "field.json")
    r = runner.invoke(app, ["field", "invert", str(tmp_path / "field.json"), "-o", str(tmp_path / "inv.zarr"),
                            "--chunks", "4"])
    assert r.exit_code == 0, r.output
    inv = ar.distributed.open_field(tmp_path / "inv.zarr")
    want = F.inverse().to_field()  # nodes without an inverse: NaN, at the same nodes
    assert want.unknown_nodes > 0 and inv.unknown_nodes == want.unknown_nodes
    assert f"{want.unknown_nodes} unknown (NaN" in r.output
    np.testing.assert_allclose(inv.to_field().displacement, want.displacement, atol=1e-3)
    r = runner.invoke(app, ["field", "invert", str(tmp_path / "field.json"), "-o", str(tmp_path / "inv0.zarr"),
                            "--chunks", "4", "--fill", "zero"])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(ar.distributed.open_field(tmp_path / "inv0.zarr").to_field().displacement,
                               F.inverse().to_field(fill="zero").displacement, atol=1e-3)
    r = runner.invoke(app, ["field", "invert", str(tmp_path / "field.json"), "-o", str(tmp_path / "bad.zarr"),
                            "--fill", "nan"])
    assert r.exit_code == 2 and "fill must be None (keep NaN), 'zero' or a finite number" in r.output
    assert not (tmp_path / "bad.zarr").exists()
    r = runner.invoke(app, ["field", "compose", "-t", str(tmp_path / "field.json"), "-t", str(tmp_path / "inv.zarr"),
                            "--like", str(tmp_path / "inv.zarr"), "-o", str(tmp_path / "roundtrip.zarr")])
    assert r.exit_code == 0, r.output
    rt = ar.distributed.open_field(tmp_path / "roundtrip.zarr")
    assert (rt.src.name, rt.dst.name) == ("ccf", "ccf")
