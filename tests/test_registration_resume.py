"""Resumable registration (issue 9): a run killed part-way resumes from its last finished stage and ends where an
uninterrupted run ends (same seed, one ITK thread: deterministic; tolerance 1e-3 µm)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import atlasreg as ar

SP4 = (200.0, 160.0, 160.0)
PARAMS = dict(working_spacing=240.0, orientation_search="off", affine_iterations=(60, 30), affine_shrink=(2, 1),
              affine_smooth=(1, 0), syn_iterations=(60, 40), syn_shrink=(2, 1), syn_smooth=(1, 0), random_seed=7)
TOL_UM = 1e-3

SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np, atlasreg as ar
    data, work, out = sys.argv[1:4]
    params = json.loads(sys.argv[4])
    sp = (200.0, 160.0, 160.0)
    fixed = ar.Volume(np.load(data + "/fixed.npy"), sp, orientation="psl", space="ccf")
    moving = ar.Volume(np.load(data + "/moving.npy"), sp, orientation="psl", space="sample")
    res = ar.register(moving, fixed, preset="fast", workdir=work,
                      progress=lambda s, st: print(s, st, flush=True), **params)
    res.save(out, figures=False)
""")


@pytest.fixture(scope="module")
def inputs(data_dir, tmp_path_factory):
    import tifffile
    from scipy import ndimage as ndi

    a = tifffile.imread(str(data_dir / "lightsheet" / "brain_psl_50x40x40um.tif"))
    s = tuple(n // 4 * 4 for n in a.shape)
    b = a[:s[0], :s[1], :s[2]].reshape(s[0] // 4, 4, s[1] // 4, 4, s[2] // 4, 4).mean((1, 3, 5)).astype(np.float32)
    # moving: a smooth known warp of the brain (shift + a bend along axis 0)
    idx = np.indices(b.shape, dtype=np.float64)
    bend = 1.5 * np.sin(idx[1] / b.shape[1] * np.pi)
    moving = ndi.map_coordinates(b, [idx[0] - 1.2 + bend, idx[1] + 0.8, idx[2] - 1.0], order=1).astype(np.float32)
    d = tmp_path_factory.mktemp("resume_data")
    np.save(d / "fixed.npy", b)
    np.save(d / "moving.npy", moving)
    (d / "run.py").write_text(SCRIPT)
    return d


def _cmd(d: Path, work: Path, out: Path):
    import json

    return [sys.executable, str(d / "run.py"), str(d), str(work), str(out), json.dumps(PARAMS)]


def _env():
    return dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")


def test_killed_run_resumes_and_matches_uninterrupted(inputs, tmp_path):
    # uninterrupted reference
    ref = subprocess.run(_cmd(inputs, tmp_path / "w_ref", tmp_path / "o_ref"), env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]

    # killed once the affine stage has finished, while the deformable stage runs
    work, out = tmp_path / "w", tmp_path / "o"
    proc = subprocess.Popen(_cmd(inputs, work, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    t0 = time.time()
    while not (work / "affine_done").exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() - t0 < 600
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "syn_done").exists(), "the deformable stage finished before the kill"
    assert not (out / "COMPLETE").exists()

    # rerun with the same folder: resumes after the affine stage
    again = subprocess.run(_cmd(inputs, work, out), env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "affine skip" in again.stdout and "syn start" in again.stdout
    assert "affine start" not in again.stdout

    a = ar.RegistrationResult.load(tmp_path / "o_ref")
    b = ar.RegistrationResult.load(out)
    fixed = np.load(inputs / "fixed.npy")
    idx = np.argwhere(fixed > np.percentile(fixed, 60))[::7]
    p = idx * np.asarray(SP4)
    d_fwd = np.abs(a.transform.map_points(p) - b.transform.map_points(p)).max()
    d_inv = np.abs(a.transform.inverse().map_points(p) - b.transform.inverse().map_points(p)).max()
    assert d_fwd < TOL_UM and d_inv < TOL_UM, (d_fwd, d_inv)
    # and the registration did something
    assert np.abs(a.transform.map_points(p) - p).max() > 100


def test_workdir_of_another_run_is_not_resumed(inputs, tmp_path):
    """Stage outputs left by different parameters are discarded, not silently reused."""
    from atlasreg.registration.pipeline import _prepare_workdir

    w = tmp_path / "w"
    f = ar.Volume(np.load(inputs / "fixed.npy"), SP4, space="ccf")
    m = ar.Volume(np.load(inputs / "moving.npy"), SP4, space="sample")
    init = ar.Affine.identity("ccf", "sample")
    from atlasreg.registration.presets import get_preset

    _prepare_workdir(w, "ants", get_preset("fast"), f, m, init)
    (w / "affine_done").write_text("1.0\n")
    _prepare_workdir(w, "ants", get_preset("fast"), f, m, init)          # same run: kept
    assert (w / "affine_done").exists()
    other = get_preset("fast")["syn_radius"] + 1
    _prepare_workdir(w, "ants", get_preset("fast", syn_radius=other), f, m, init)  # other parameters: cleared
    assert not (w / "affine_done").exists()
