"""``atlasreg demo`` end to end on the phantom (every step scored against ground truth), the
phantom's own truth, the command's guards, and ``atlasreg qc`` on the demo's result folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from _demo_run import _drop_closed_log_handlers, demo_output, demo_run
from atlasreg.cli import app
from atlasreg.demo.phantom import ATLAS, labels_at, make_phantom


def _invoke(args):
    res = CliRunner().invoke(app, args)
    _drop_closed_log_handlers()
    return res


@pytest.fixture(scope="module")
def summary():
    out = demo_output()
    return json.loads((out / "summary.json").read_text())


def _metric(summary, section, name):
    for m in summary["metrics"]:
        if m["section"] == section and m["name"] == name:
            return m["value"]
    raise KeyError((section, name))


def test_phantom_is_deterministic_and_its_truth_is_consistent():
    a, b = make_phantom(seed=3), make_phantom(seed=3)
    assert np.array_equal(a.sample.numpy(), b.sample.numpy())
    assert np.array_equal(a.em_synapses, b.em_synapses)
    assert not np.array_equal(a.sample.numpy(), make_phantom(seed=4).sample.numpy())
    # the sample's true labels are the anatomy at the true atlas position of each sample voxel
    idx = np.argwhere(a.sample_annotation.numpy() > 0)[::97]
    x = a.sample.index_to_physical(idx)
    y = a.sample_to_atlas.map_points(x)
    assert np.allclose(a.atlas_to_sample.map_points(y), x, atol=1e-3)
    assert np.mean(labels_at(y) == a.sample_annotation.numpy()[tuple(idx.T)]) > 0.999
    # landmarks: true LM positions are the EM points through the true map; measured ones carry ~1.5 µm noise
    lm = a.em_landmarks
    true = a.em_to_sample.map_points(lm[["em_x", "em_y", "em_z"]].to_numpy())
    assert np.allclose(true, lm[["lm_true_x", "lm_true_y", "lm_true_z"]].to_numpy())
    noise = np.linalg.norm(lm[["lm_x", "lm_y", "lm_z"]].to_numpy() - true, axis=1)
    assert 1.0 < np.median(noise) < 5.0
    # the EM block sits in CA3; every neuron's soma is inside the brain
    syn = a.sample_to_atlas.map_points(a.em_to_sample.map_points(a.em_synapses))
    assert np.all(labels_at(syn) == 463)
    assert all(n["soma_region"] > 0 for n in a.neurons)
    assert a.sample.space.orientation == "psl" and a.atlas_reference.space == ATLAS


def test_demo_runs_every_stage_and_meets_accuracy(summary):
    r = demo_run()
    stages = {s["name"]: s["status"] for s in summary["stages"]}
    assert all(v == "ok" for v in stages.values()), stages
    assert len(stages) == 9
    text = r["output"]
    assert "Accuracy of each step" in text and "report.html" in text
    # registration beats the best possible affine, keeps regions, does not fold
    tre = _metric(summary, "registration", "TRE median")
    oracle = _metric(summary, "registration", "best possible affine (oracle), median")
    assert tre < oracle
    assert _metric(summary, "registration", "Dice, mean over regions") > 0.8
    assert _metric(summary, "registration", "folding fraction (det J <= 0)") < 1e-3
    assert _metric(summary, "cells", "cells assigned their true region") > 85
    # EM block: a spline beats an affine on the bent block; synapses land in CA3
    assert _metric(summary, "EM block -> sample", "model chosen") == "tps"
    em = _metric(summary, "EM block -> sample", "held-out synapse error median")
    assert em < _metric(summary, "EM block -> sample", "same, plain affine fit") and em < 4.0
    assert _metric(summary, "EM synapses -> atlas", "synapses placed in CA3") > 80
    assert _metric(summary, "neurons -> atlas", "somata in their true region") in ("4 of 5", "5 of 5")
    assert "CA3_to_CA1" in _metric(summary, "EM + optical", "neurons passing through the EM block")


def test_demo_writes_its_result_folder(summary):
    out = demo_output()
    for rel in ("report.html", "summary.json", "inputs/sample.nii.gz", "inputs/em_landmarks.csv",
                "atlas_space/cells.csv", "atlas_space/em_synapses.csv", "tables/dice_per_region.csv"):
        assert (out / rel).exists(), rel
    assert len(list((out / "atlas_space" / "neurons").glob("*.swc"))) == 5
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(summary["figures"]) >= 8
    import atlasreg as ar

    s = ar.read_volume(out / "inputs" / "sample.nii.gz")
    assert s.shape == make_phantom().sample.shape


def test_demo_refuses_to_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    res = _invoke(["demo", "-o", str(tmp_path)])
    assert res.exit_code == 4 and "--force" in res.output
    assert (tmp_path / "keep.txt").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1


def test_demo_rejects_a_data_dir_without_data(tmp_path):
    res = _invoke(["demo", "-o", str(tmp_path / "out"), "--data-dir", str(tmp_path)])
    assert res.exit_code == 2 and "atlas/" in res.output
    assert not (tmp_path / "out").exists()


def test_qc_command_rebuilds_the_report(tmp_path):
    out = demo_output()
    target = tmp_path / "again.html"
    res = _invoke(["qc", str(out), "-o", str(target)])
    assert res.exit_code == 0, res.output
    assert target.read_text().count("data:image/png;base64,") >= 8
    assert _invoke(["qc", str(out), "-o", str(target)]).exit_code == 4
    assert _invoke(["qc", str(out), "-o", str(target), "--force"]).exit_code == 0
    assert _invoke(["qc", str(tmp_path / "missing")]).exit_code == 2


@pytest.mark.slow
def test_demo_on_real_data(data_dir, tmp_path):
    res = _invoke(["demo", "--data-dir", str(data_dir), "-o", str(tmp_path / "real")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "real" / "summary.json").read_text())
    assert all(st["status"] == "ok" for st in s["stages"]), s["stages"]
    assert _metric(s, "Zheng CA3 EM block", "EM landmarks landing in the hippocampal formation") > 70


def test_demo_stage_times_add_up_and_labels_are_distinct(summary):
    """Issue 16, item 16: the registration's sub-stage lines account for its time (ANTs start-up, metrics and
    scoring are stages of their own); no two progress lines carry one label with different numbers."""
    import re

    out = demo_run()["output"]
    block = out.split("[3/9]")[1].split("[4/9]")[0]
    subs = [float(x) for x in re.findall(r"^      .+ done in ([0-9.]+) s \(total", block, re.M)]
    total = float(re.findall(r"^      done in ([0-9.]+) s \(total", block, re.M)[-1])
    assert "ANTs start-up done in" in block and "score against the truth done in" in block
    assert sum(subs) > 0.85 * total, (sum(subs), total, block)
    labels = [ln.split(":")[0] for ln in out.splitlines() if ln.startswith(("landmark fit", "registration:"))]
    assert len(labels) == len(set(labels)), labels
    # the landmark residual figure says how much its arrows are lengthened
    cap = [f["caption"] for f in summary["figures"] if f["file"].endswith("em_landmarks.png")]
    assert cap and re.search(r"lengthened [0-9.]+ times", cap[0]), cap


def test_landmark_residual_arrows_are_scaled_to_be_seen():
    """Issue 16, item 18: residuals of ~1 µm over a 1 mm cloud are drawn lengthened (1, 2 or 5 x 10^n), and the
    panel says by how much."""
    from atlasreg import qc

    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1000, (30, 3))
    pred = truth + rng.normal(0, 1.0, (30, 3))
    fig = qc.landmark_residuals(pred, truth)
    k = fig.arrow_scale
    assert k >= 20 and f"{k:g}" in fig.axes[1].get_title()
    q = fig.axes[1].collections[-1]  # the quiver
    assert np.isclose(q.scale, 1.0 / k)
    big = qc.landmark_residuals(truth + 200.0, truth)  # already visible: not lengthened
    assert big.arrow_scale == 1.0
