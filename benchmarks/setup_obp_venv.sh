#!/usr/bin/env bash
# Build a separate venv with Open Bandit Pipeline 0.5.7 for the ope comparisons.
# OBP 0.5.7 declares python<3.11 and old pins, so it is installed without its
# declared dependencies next to a modern stack that works with it on 3.11.
# Usage: bash benchmarks/setup_obp_venv.sh [VENV_DIR]   (default /work/venv-obp)
set -euo pipefail
VENV="${1:-/work/venv-obp}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3.11}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "numpy>=2" scipy scikit-learn "pandas<3" matplotlib \
    seaborn tqdm pyyaml polars pytest "torch==2.13.0"
"$VENV/bin/python" -m pip install -q --no-deps --ignore-requires-python obp==0.5.7
"$VENV/bin/python" -m pip install -q --no-deps -e "$REPO"
"$VENV/bin/python" -c "import obp, ope; print('obp', obp.__version__, 'ope ok')"
