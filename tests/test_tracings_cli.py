"""``atlasreg combine`` on the real neurons (fly EM skeletons placed synthetically in the mouse CCF)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from atlasreg import Space, save_transform
from atlasreg.cli import app
from atlasreg.tracings import place_block, read_collection, read_swc

runner = CliRunner()


def _args(data_dir, out, block, *extra):
    nd = data_dir / "neurons"
    return ["combine", "--em", str(nd / "hemibrain_em"), "--em-space", "hemibrain", "--em-unit", "nm",
            "--em-voxel-size", "8", "--optical", str(nd / "fmost_ccf25" / "18453_4221_x16935_y5165_MOp.swc"),
            "--optical", str(nd / "fmost_ccf25" / "17302_00002_CP.swc"), "--optical-voxel-size", "25",
            "--orientation", "asr", "--block", block, "-o", str(out), *extra]


def test_combine_cli_with_box(tmp_path, data_dir):
    mop = read_swc(data_dir / "neurons" / "fmost_ccf25" / "18453_4221_x16935_y5165_MOp.swc", space="ccf",
                   unit="um", voxel_size=25)
    c = mop.points[mop.n_nodes // 2]  # a box around a point of this axon
    box = ",".join(f"{v:.3f}" for v in np.concatenate([c - 150, c + 150]))
    out = tmp_path / "combined"
    r = runner.invoke(app, _args(data_dir, out, box))
    assert r.exit_code == 0, r.output
    assert "5 EM + 2 optical neurons" in r.output and "synthetic" in r.output
    hits = pd.read_csv(out / "passing.csv")
    assert mop.name in hits["name"].tolist() and "17302_00002_CP" not in hits["name"].tolist()
    both = read_collection(out)
    assert len(both) == 7 and both.space == Space("ccf", "um", "asr")
    em = both["722817260"]
    assert em.provenance["source_space"] == "hemibrain" and len(em.synapses) > 1000
    # the EM skeletons sit in the box centre
    assert np.abs(np.mean([both[n].points.mean(0) for n in both.names[:5]], 0) - c).max() < 300
    blk = json.loads((out / "block.json").read_text())
    assert blk["atlas_space"] == "ccf" and np.allclose(blk["lo"], c - 150, atol=1e-3)
    # refusing to overwrite; --force overwrites
    r = runner.invoke(app, _args(data_dir, out, box))
    assert r.exit_code == 4 and "--force" in r.output
    assert runner.invoke(app, _args(data_dir, out, box, "--force")).exit_code == 0


def test_combine_cli_with_transform_file(tmp_path, data_dir):
    em = Space("hemibrain", "nm")
    lo, hi = np.array([17000.0, 90000, 80000]), np.array([180000.0, 300000, 230000])
    mop = read_swc(data_dir / "neurons" / "fmost_ccf25" / "18453_4221_x16935_y5165_MOp.swc", space="ccf",
                   unit="um", voxel_size=25)
    T = place_block(em, lo, hi, mop.points[mop.n_nodes // 3], Space("ccf", "um", "asr"), rotation_deg=(0, 30, 0))
    tf = save_transform(T, tmp_path / "em_to_ccf.json")
    out = tmp_path / "c2"
    r = runner.invoke(app, _args(data_dir, out, str(tf)))
    assert r.exit_code == 0, r.output
    hits = pd.read_csv(out / "passing.csv")
    assert hits["name"].tolist()[:1] == [mop.name] and hits["length_inside"].iat[0] > 0


def test_combine_cli_bad_input(tmp_path, data_dir):
    r = runner.invoke(app, _args(data_dir, tmp_path / "x", "1,2,3"))
    assert r.exit_code == 2 and "transform" in r.output.lower()
    r = runner.invoke(app, _args(data_dir, tmp_path / "x", "10,10,10,0,0,0"))
    assert r.exit_code == 2 and "hi must exceed" in r.output
    bad = tmp_path / "bad.swc"
    bad.write_text("1 1 0 0 0 1 -1\n2 3 1 0 0 1 7\n")
    args = _args(data_dir, tmp_path / "y", "0,0,0,1,1,1")
    args[args.index("--optical") + 1] = str(bad)
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "bad.swc" in r.output and "line 2" in r.output
