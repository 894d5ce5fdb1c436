#!/usr/bin/env bash
# One-command set-up of the TransformerLens reference environment.
# Creates reference/.venv (gitignored) and installs reference/requirements.txt into it.
# torch pulls ~3 GB of CUDA wheels from PyPI; everything runs on CPU regardless.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
VENV="$HERE/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --upgrade --quiet pip
"$VENV/bin/python" -m pip install -r "$HERE/requirements.txt"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for p in ("transformer-lens", "torch", "transformers", "safetensors", "tokenizers", "numpy"):
    print(f"{p}=={md.version(p)}")
PY
