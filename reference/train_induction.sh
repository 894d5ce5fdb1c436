#!/usr/bin/env bash
# Train the embedded induction model (tests/models/induction/), write its plan tests/plans/induction.full.json and
# the golden tests/golden/induction.full.safetensors. Run reference/setup.sh first. One torch thread, fixed seeds:
# a rerun rewrites byte-identical files (~4 minutes on one CPU core). Extra arguments go to train_induction.py.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="$HERE/.venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "train_induction.sh: $PY not found; run reference/setup.sh first" >&2
    exit 1
fi
export TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES=""
cd "$ROOT"
exec "$PY" "$HERE/train_induction.py" "$@"
