"""Numba's threading layer (issue 13 item 8).

atlasreg's parallel kernels are launched from dask's worker threads (blockwise jobs, and the per-block
checks of every lazily read volume). Under numba's ``workqueue`` layer two concurrent launches abort the
process; atlasreg chooses a thread-safe layer itself and, where only ``workqueue`` is there (or the user
forces it), serialises the launches. Each case runs in a fresh process, since the layer is fixed at the
first launch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

WORK = textwrap.dedent("""
    import json, sys
    import numpy as np, numba, zarr
    import atlasreg as ar
    from atlasreg.distributed import map_points

    rng = np.random.default_rng(0)
    F = ar.DisplacementField(rng.normal(0, 0.5, (20, 20, 20, 3)), spacing=(1, 1, 1), src="a", dst="b")
    pts = rng.uniform(2, 17, (120_000, 3))
    got = map_points(pts, F, chunk_size=4_000, scheduler="threads", num_workers=4)
    assert np.allclose(got, F.map_points(pts)), "chunked mapping differs"
    # a float volume written by zarr itself, read lazily: each block's finite check is a parallel kernel
    z = zarr.open_array(sys.argv[1], mode="w", shape=(96, 96, 96), chunks=(16, 16, 16), dtype="f4")
    z[:] = rng.random((96, 96, 96), dtype=np.float32)
    vol = ar.read_volume(sys.argv[1], voxel_size=1.0)
    import dask
    with dask.config.set(scheduler="threads", num_workers=4):
        assert np.array_equal(vol.numpy(), z[:])
    from atlasreg import parallel
    print(json.dumps({"chosen": parallel.threading_layer(), "numba": numba.threading_layer(),
                      "safe": parallel.is_threadsafe()}))
""")


def _run(tmp_path: Path, layer: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env.update({"PYTHONPATH": str(REPO), "NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"})
    if layer:
        env["NUMBA_THREADING_LAYER"] = layer
    script = tmp_path / "work.py"
    script.write_text(WORK)
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "v.zarr")], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, f"exit {p.returncode} under {layer or 'the default'} layer:\n{p.stderr[-3000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_forced_workqueue_layer_does_not_abort(tmp_path):
    out = _run(tmp_path, "workqueue")
    assert out == {"chosen": "workqueue", "numba": "workqueue", "safe": False}


def test_default_is_a_threadsafe_layer_chosen_explicitly(tmp_path):
    out = _run(tmp_path, None)
    assert out["safe"] and out["chosen"] == out["numba"] and out["numba"] in ("tbb", "omp")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the tbb wheel atlasreg depends on: Linux x86-64")
def test_tbb_dependency_loads_from_the_environment(tmp_path):
    pytest.importorskip("numba.np.ufunc.parallel")
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("tbb")
    except PackageNotFoundError:
        pytest.skip("tbb is not installed here")
    out = _run(tmp_path, "tbb")
    assert out["numba"] == "tbb" and out["safe"]


def test_every_parallel_kernel_goes_through_njit_parallel():
    """A kernel made with numba.njit(parallel=True) directly would abort again under workqueue."""
    import ast

    pkg = REPO / "atlasreg"
    direct = []
    for p in pkg.rglob("*.py"):
        if p.name == "parallel.py" and p.parent == pkg:
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("njit"):
                kws = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if kws.get("parallel") == "True" or any(k.arg is None and "_PAR" in ast.unparse(k.value)
                                                        for k in node.keywords):
                    direct.append(f"{p.relative_to(REPO)}:{node.lineno}")
    assert not direct, f"use atlasreg.parallel.njit_parallel for parallel kernels: {direct}"
